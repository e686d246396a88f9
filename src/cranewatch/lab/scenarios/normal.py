"""normal: STS-07 working container moves, nothing else on the wire.

The CMS polls the PLC every 200 ms, the OCR controller watches the spreader every 500 ms and
publishes one event per move to the terminal broker, the TOS answers with work orders to
the CMS over HTTP, the CMS logs to syslog and asks NTP for the time; DNS names resolve at
the terminal resolver. The baseline capture (seed 7).
"""

from cranewatch.lab.scenario import Scenario

SCENARIO = Scenario(
    name="normal",
    summary="the crane working container moves; baseline traffic only (seed 7)",
    seed=7,
)

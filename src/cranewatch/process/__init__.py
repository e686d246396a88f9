"""Process integrity: crane signals from the wire, crane state, physical-relation checks.

Entry points: ``engine.build_sink`` (a capture-pipeline sink that returns ``false-reading`` and
``safety-override`` findings), ``engine.run_checks`` (the pure core over an aligned
``signals.SignalFrame``), ``engine.learn_from_captures`` (the process baseline of a clean
capture), ``signals.extract_signals`` / ``signals.build_frame`` (register map → samples → grid),
``learned.fit`` (learned relations with CUSUM thresholds for plants without physics) and
``batadal.evaluate`` (the public-data evaluation). See docs/process.md.
"""

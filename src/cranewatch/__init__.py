"""cranewatch: security monitoring, forensics and commissioning gate for container cranes.

The public API is listed in ``__all__``; everything else is private to the package.
"""

from cranewatch.errors import CranewatchError, Location
from cranewatch.model import Evidence, Finding, Severity

__version__ = "0.1.0"

__all__ = [
    "CranewatchError",
    "Evidence",
    "Finding",
    "Location",
    "Severity",
    "__version__",
]

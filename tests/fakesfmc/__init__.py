"""A faithful fake of Salesforce Marketing Cloud for tests and demos (sfmc-api.md §10).

One real HTTP server on 127.0.0.1 serves the token endpoint, the transactional messaging routes and
ENS management; a dispatcher thread POSTs signed ENS batches to mapped local receivers.
"""

from .clock import FakeClock, RealClock
from .dispatcher import Delivery
from .fake import FakeSFMC
from .knobs import Knobs
from .outcomes import PRESETS, Outcome
from .signing import sign

__all__ = ["FakeSFMC", "FakeClock", "RealClock", "Knobs", "Outcome", "PRESETS", "Delivery", "sign"]

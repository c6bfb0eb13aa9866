"""The bundled stand-in for the platform: a real HTTP server on loopback (``ehc sandbox``)."""

from pipeline.sandbox.faults import FAULT_KINDS, FaultPlan
from pipeline.sandbox.server import PATH_PREFIX, SandboxServer, build_server, serve
from pipeline.sandbox.store import SandboxStore, max_in_window

__all__ = [
    "FAULT_KINDS",
    "PATH_PREFIX",
    "FaultPlan",
    "SandboxServer",
    "SandboxStore",
    "build_server",
    "max_in_window",
    "serve",
]

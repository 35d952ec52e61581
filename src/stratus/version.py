"""The package's version, in a module of its own: modules that record it (the sample cache's key) import it
from here rather than from the root package, which re-exports the SDK's client."""

__version__ = "0.1.0"

"""diag: diagnostics for self-hosted multimodal LLM inference servers."""

__version__ = "0.1.0"

import os as _os

if _os.environ.get("DIAG_NO_EXT"):
    # Run the pure-Python package even where the compiled modules were built (diag.compiled).
    from diag.compiled import use_source as _use_source

    _use_source()

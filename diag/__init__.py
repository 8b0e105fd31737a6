"""diag: diagnostics for self-hosted multimodal LLM inference servers."""

__version__ = "0.1.0"

"""One module per log format (vLLM, uvicorn, LMDeploy, llama.cpp, Nginx, the forwarding proxy):
its line patterns and what each line means as an event. The registry is `diag.parsing.source`."""

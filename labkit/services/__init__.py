"""The lab's services, each a process of its own: `modelserver` (an Ollama-compatible model server on
llama.cpp or simulated tokens) and `wrapper` (the public LLM API in front of it, with its fault API).

They import nothing of the lab, measurement or chaos layers: a service process stays small.
"""

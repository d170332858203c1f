"""Serving: an OpenAI-compatible HTTP server over ``plait.inference``, with dynamic batching.

- :mod:`plait.serving.engine`: many requests decoding together on one model (one thread).
- :mod:`plait.serving.app`: the FastAPI application (``plait serve``).
"""

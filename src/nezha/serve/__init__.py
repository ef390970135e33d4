"""``nezha serve``: an HTTP JSON API and a try-it web page over a model folder, with dynamic batching.

Needs the ``serve`` extra (``pip install 'nezha-pytorch[serve]'``: FastAPI and uvicorn). See docs/serve.md.
"""

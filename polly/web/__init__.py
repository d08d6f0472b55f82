"""The web dashboard: Discord members sign in and create, schedule and manage polls in a browser.

:func:`polly.web.app.create_app` builds the Starlette application; :func:`polly.web.serve.serve_web`
serves it inside polly's event loop (``polly run`` beside the engine, ``polly web`` alone).
"""

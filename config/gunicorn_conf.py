"""gunicorn's settings for `make run` and production: ``gunicorn -c python:config.gunicorn_conf config.wsgi``.

Environment: PORT (default 8000) and GUNICORN_BIND (default 127.0.0.1:$PORT; behind a proxy e.g.
0.0.0.0:8000), WEB_CONCURRENCY (workers, default 2).
"""

from __future__ import annotations

import os

import gunicorn.http.wsgi

bind = [os.environ.get("GUNICORN_BIND") or f"127.0.0.1:{os.environ.get('PORT', '8000')}"]
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
accesslog = "-"
# gunicorn names itself in the Server header of every response, and has no setting to stop it; the
# name of the software serving the trial data is nobody's business (no version was ever sent).
SERVER_HEADER = "cart-trials"
gunicorn.http.wsgi.SERVER = SERVER_HEADER
# No control socket: nothing here uses gunicornc, and its default path ($HOME/.gunicorn) is shared by
# every checkout of the same user.
control_socket_disable = True

"""``python -m services.web``: the web relay, served by waitress until SIGTERM or Ctrl-C."""

from services.common.service import run_service
from services.web.relay import WebRelay
from services.web.settings import WebSettings

if __name__ == "__main__":
    run_service(WebSettings, WebRelay)

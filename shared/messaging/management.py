"""RabbitMQ's management HTTP API, for what AMQP cannot do: users, permissions, vhosts, and loading
definitions (exchanges, queues, bindings and permissions in one request)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, unquote, urlsplit, urlunsplit
from urllib.request import Request, urlopen

from shared.errors import OrderflowError
from shared.settings import masked

MANAGEMENT_PORT = 15672
MANAGEMENT_TLS_PORT = 15671


class ManagementError(OrderflowError):
    """The management API refused a request or could not be reached."""


class Management:
    """A client of one broker's management API, as the user its URL names
    (http://user:password@host:15672)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        credentials = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        self._authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self._base = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2], path="/api"))
        self._shown = masked(url)
        self._timeout = timeout

    @classmethod
    def beside(cls, amqp_url: str) -> Management:
        """The management API of the broker `amqp_url` names, as the same user, on its usual port:
        over HTTPS (15671) for an amqps:// broker, so no password crosses the network in clear."""
        parts = urlsplit(amqp_url)
        user = quote(unquote(parts.username or "guest"), safe="")
        password = quote(unquote(parts.password or "guest"), safe="")
        if parts.scheme.lower() == "amqps":
            return cls(f"https://{user}:{password}@{parts.hostname}:{MANAGEMENT_TLS_PORT}")
        return cls(f"http://{user}:{password}@{parts.hostname}:{MANAGEMENT_PORT}")

    def load_definitions(self, definitions: dict[str, Any]) -> None:
        """Create or update everything `definitions` names: users, vhosts, permissions, exchanges,
        queues and bindings (a queue that exists with other arguments is left as it is)."""
        self._request("POST", "/definitions", definitions)

    def delete_vhost(self, vhost: str) -> None:
        self._request("DELETE", f"/vhosts/{quote(vhost, safe='')}")

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = Request(self._base + path, data=data, method=method)
        request.add_header("Authorization", self._authorization)
        request.add_header("Content-Type", "application/json")
        try:
            with urlopen(request, timeout=self._timeout) as response:
                text = response.read()
        except HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise ManagementError(f"{method} {path} at {self._shown}: HTTP {e.code}: {detail}") from e
        except (URLError, OSError) as e:
            raise ManagementError(f"cannot reach RabbitMQ's management API at {self._shown}: {e}") from e
        return json.loads(text) if text else None

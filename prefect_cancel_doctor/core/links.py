"""Links into the Prefect UI, built the way Prefect builds them (without importing Prefect).

Prefect's `default_ui_url` (prefect/settings/models/_defaults.py) and
`default_cloud_ui_url` (prefect/settings/models/cloud.py) turn the API URL into
the UI's; `url_for` (prefect/utilities/urls.py) appends `runs/flow-run/<id>`:

- `PREFECT_UI_URL`, when set, is the UI;
- a Cloud API URL (`PREFECT_CLOUD_API_URL`, https://api.prefect.cloud/api by
  default) becomes `PREFECT_CLOUD_UI_URL` (https://app.prefect.cloud by default);
- a trailing `/api` goes, `/api/` becomes `/`, `/accounts/` `/account/` and
  `/workspaces/` `/workspace/`.

So `http://host:4200/api` links to `http://host:4200/runs/flow-run/<id>` and
`https://api.prefect.cloud/api/accounts/A/workspaces/W` to
`https://app.prefect.cloud/account/A/workspace/W/runs/flow-run/<id>`.

A link is made only for a run id that is a UUID, and only from a base URL that
is a plain http(s) URL: nothing a server sends can turn into a link elsewhere.
Credentials in the API URL never reach the link.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

#: Prefect's defaults for `PREFECT_CLOUD_API_URL` and the UI it derives from it.
CLOUD_API_URL = "https://api.prefect.cloud/api"

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def is_uuid(value: str) -> bool:
    """Whether `value` is a UUID, as run ids are: safe in a URL path and in a shell word."""
    return _UUID.fullmatch(value) is not None


#: A base URL safe to print inside Markdown, HTML attributes and terminal hyperlinks.
_SAFE_BASE = re.compile(r"https?://[A-Za-z0-9._~:/%@!$&'*+,;=-]+", re.ASCII)


def ui_base_url(
    api_url: str | None,
    env: Mapping[str, str] | None = None,
    profile: Mapping[str, object] | None = None,
) -> str | None:
    """The Prefect UI's base URL for `api_url`: PREFECT_UI_URL (environment, then `profile`),
    else derived from the API URL as Prefect does; None where no safe URL can be made."""
    env = os.environ if env is None else env
    values = profile or {}

    def setting(key: str) -> str | None:
        value = env.get(key) or values.get(key)
        return str(value).strip() or None if value not in (None, "") else None

    explicit = setting("PREFECT_UI_URL")
    if explicit:
        return _safe(explicit)
    if not api_url:
        return None
    ui = _without_credentials(api_url.rstrip("/"))
    if ui is None:
        return None
    cloud_api = setting("PREFECT_CLOUD_API_URL") or CLOUD_API_URL
    cloud_ui = setting("PREFECT_CLOUD_UI_URL") or _cloud_ui(cloud_api)
    if ui.startswith(cloud_api) and cloud_ui:
        ui = ui.replace(cloud_api, cloud_ui)
    if ui.endswith("/api"):
        ui = ui[:-4]
    ui = ui.replace("/api/", "/").replace("/accounts/", "/account/").replace("/workspaces/", "/workspace/")
    return _safe(ui)


def flow_run_url(ui_base: str | None, run_id: str | None) -> str | None:
    """The UI page of a flow run; None without a base or for an id that is not a UUID."""
    if not ui_base or not run_id or not is_uuid(run_id):
        return None
    return f"{ui_base.rstrip('/')}/runs/flow-run/{run_id.lower()}"


def _cloud_ui(cloud_api: str) -> str:
    """Prefect's `default_cloud_ui_url`: https://api.… becomes https://app.…, without /api."""
    ui = cloud_api
    if re.match(r"^https://api[\.\w]*.prefect.[^\.]+/", ui):
        ui = ui.replace("https://api", "https://app", 1)
    return ui[:-4] if ui.endswith("/api") else ui


def _without_credentials(url: str) -> str | None:
    """`url` without the user and password of its authority; None when it is no URL."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        return None
    if not host:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _safe(url: str) -> str | None:
    url = url.rstrip("/")
    if not _SAFE_BASE.fullmatch(url):
        return None
    return _without_credentials(url)


__all__ = ["CLOUD_API_URL", "flow_run_url", "is_uuid", "ui_base_url"]

"""prefect-cancel-doctor: why won't this Prefect flow run cancel?"""

import sys
import types

__version__ = "0.1.0"


def _import_httpx_without_its_cli() -> None:
    """Import httpx without `httpx._main`, its command-line client.

    `import httpx` imports its CLI, and with it click, pygments and rich.syntax,
    when they are installed (they are, beside Prefect): about 40 ms of every
    command's start-up for code we never call (encode/httpx#3547, still open).
    httpx catches the ImportError an empty placeholder raises and defines a stub
    `httpx.main`; the placeholder is then dropped so that an explicit
    `import httpx._main` elsewhere still gets the real module.
    """
    if "httpx" in sys.modules:
        return
    placeholder = types.ModuleType("httpx._main")
    sys.modules["httpx._main"] = placeholder
    try:
        import httpx  # noqa: F401
    finally:
        if sys.modules.get("httpx._main") is placeholder:
            del sys.modules["httpx._main"]


_import_httpx_without_its_cli()

"""httpx, imported without its command-line client: `from prefect_cancel_doctor._http import httpx`.

`import httpx` imports its CLI, and with it click, pygments and rich.syntax,
when they are installed (they are, beside Prefect): about 40 ms of every
command's start-up, for code we never call (encode/httpx#3547, still open).
An empty placeholder for `httpx._main` makes httpx's own `except ImportError`
define a stub `httpx.main` instead; the placeholder is dropped afterwards, so
an explicit `import httpx._main` elsewhere still gets the real module.
"""

import sys
import types

if "httpx" not in sys.modules:
    _placeholder = types.ModuleType("httpx._main")
    sys.modules["httpx._main"] = _placeholder
    try:
        import httpx
    finally:
        if sys.modules.get("httpx._main") is _placeholder:
            del sys.modules["httpx._main"]
else:
    import httpx

__all__ = ["httpx"]

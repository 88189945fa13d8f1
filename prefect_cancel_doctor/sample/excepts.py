"""`except` clauses in the flow's code that would swallow Prefect's `TerminationSignal`.

On cancel, Prefect's SIGTERM handler raises `prefect.exceptions.TerminationSignal` (an
`ExternalSignal`, a `BaseException`) in the main thread, at whatever line it is on. A `try` of
the flow's own around that line whose handler catches it (`except BaseException`, a bare
`except:`, `except TerminationSignal` / `ExternalSignal`, also in a tuple or dotted) and does not
re-raise swallows the signal, and the flow goes on: inside a loop, with the next item.
`contextlib.suppress(BaseException)` (or of the signal classes) around the line does the same.

The source is read as the process sees it and parsed with `ast`; nothing is imported or run.

What a handler does with the signal, read from the statements that surely run in it (its top
level; the body of a `with` there; the `finally` of a `try` there; the branch of an `if` whose
test is about the signal's type, such as `isinstance(exc, TerminationSignal)` or the idiom
`not isinstance(exc, Exception)`):

* `raise` in any form (bare, `raise exc`, `raise Other(...) from exc`, `raise SystemExit`), or
  `sys.exit(...)`, `os._exit(...)`, `os.abort()`, `exit(...)`, `quit(...)`: the signal (or an
  exit) goes on out; not a swallow, and an outer `try` (also in a caller's frame) is looked at.
* `return`: the function is left. Where no user code is further out on the stack
  (`caller_goes_on=False`: the flow function itself, called by Prefect's engine) the flow ends
  and the process with it: not a swallow. Where a user frame called this one (a helper, a task the
  flow calls in a loop) that caller goes on: a swallow, with `loop_line` None (the loop to go on,
  if any, is the caller's).
* `break`: a swallow that ends the loop; the flow goes on after it, so `loop_line` is None.
* `continue`, or running to the handler's end: a swallow; the flow goes on with the loop's next
  item (`loop_line`) or after the `try`.

A raise or exit under any other condition (`if retries > 3: raise`) is not sure to run: the
clause is still reported. `except Exception` and `except*` (an exception group cannot hold a
`BaseException`) never catch the signal. Not looked at: a `return`/`break`/`continue` in a
`finally` (which also discards an exception in flight), and an outer `except Exception` catching
what a handler raised instead of the signal.
"""

from __future__ import annotations

import ast
import re
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

from prefect_cancel_doctor.core.inert import visible
from prefect_cancel_doctor.core.redact import redact_code
from prefect_cancel_doctor.model import CleanupClause, Frame, ProcessSample, SwallowingExcept
from prefect_cancel_doctor.sample.classify import is_library
from prefect_cancel_doctor.sample.threads import thread_views

#: Class names (last dotted part) whose `except` catches Prefect's `TerminationSignal`.
_SIGNAL_CLASSES = frozenset({"BaseException", "TerminationSignal", "ExternalSignal"})
#: Calls that end the process (or raise SystemExit): a handler making one does not go on.
_EXITS = frozenset({"sys.exit", "os._exit", "os.abort", "exit", "quit", "_exit"})
#: Frames of code with no statement of its own around the line (a lambda, a generator expression
#: run wherever it is consumed); comprehensions are also looked at through their caller's frame.
_EXPRESSION_FRAMES = frozenset({"<lambda>", "<genexpr>", "<listcomp>", "<setcomp>", "<dictcomp>"})
_NEWLINE = re.compile(r"\r\n|\r|\n")

_Loop = (ast.For, ast.AsyncFor, ast.While)
_Try = (ast.Try, *((ast.TryStar,) if hasattr(ast, "TryStar") else ()))
_Scope = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_ScopeNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


class _Parsed(NamedTuple):
    """A source file parsed once for every frame in it: its tree, its lines, and the names that
    stand for the signal classes in it."""

    tree: ast.Module
    lines: list[str]
    signal_names: frozenset[str]


def _parse(source: str, filename: str) -> _Parsed | None:
    """None when the source does not parse (or is nested too deep for the parser)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarning of 3.12+ for "\d" in the flow's code
            tree = ast.parse(source, filename)
        return _Parsed(tree, _NEWLINE.split(source), _SIGNAL_CLASSES | _aliases(tree))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


def swallowing_except(
    source: str, filename: str, line: int, function: str, *, caller_goes_on: bool = False
) -> SwallowingExcept | None:
    """The innermost clause of `source` that would swallow a termination signal raised at `line`
    of `function`, None when none would (or the source does not parse).

    `caller_goes_on`: user code further out on the stack called this function, so a `return`
    from the handler lets it go on (see the module's docstring).
    """
    parsed = _parse(source, filename)
    path = None if parsed is None else _frame_path(parsed, line, function)
    if parsed is None or path is None:
        return None
    return _swallowing(parsed, path, filename, line, function, caller_goes_on)


def _frame_path(parsed: _Parsed, line: int, function: str) -> list[tuple[ast.AST, str]] | None:
    """The statements around a frame's `line` (`_path`); None for a frame no clause of the file can
    hold: no line, or a comprehension's or lambda's own frame."""
    if line < 1 or function in _EXPRESSION_FRAMES:
        return None
    return _path(parsed.tree.body, line, function)


def _swallowing(
    parsed: _Parsed,
    path: list[tuple[ast.AST, str]],
    filename: str,
    line: int,
    function: str,
    caller_goes_on: bool,
) -> SwallowingExcept | None:
    try:
        for depth in range(len(path) - 1, -1, -1):
            node, part = path[depth]
            found: tuple[ast.AST, str, bool] | None = None
            if isinstance(node, ast.Try) and part == "body":
                found = _catching_handler(node, parsed.signal_names, caller_goes_on)
            elif isinstance(node, (ast.With, ast.AsyncWith)) and part == "body":
                found = _suppressing_item(node, parsed.signal_names)
            if found is None:
                continue
            clause, catches, leaves_loop = found
            loop = None
            if not leaves_loop:
                loops = (n for n, p in reversed(path[:depth]) if isinstance(n, _Loop) and p == "body")
                loop = next(loops, None)
            where = getattr(clause, "lineno", 0)
            return SwallowingExcept(
                filename=filename,
                line=where,
                code=_code(parsed.lines, where),
                catches=catches,
                function=function,
                frame_line=line,
                loop_line=loop.lineno if loop is not None else None,
            )
    except (ValueError, RecursionError, MemoryError):  # ast.unparse of a type nested too deep
        return None
    return None


def cleanup_clause(
    source: str, filename: str, line: int, function: str, *, callee: str | None = None
) -> CleanupClause | None:
    """The innermost cleanup code of `source` that runs `line` of `function`: a `finally` body, the
    body of an `except` that catches a termination signal, or (where the frame it called, `callee`,
    is an `__exit__`/`__aexit__`) the exit of the `with` at `line`. None when there is none."""
    parsed = _parse(source, filename)
    path = None if parsed is None else _frame_path(parsed, line, function)
    if parsed is None or path is None:
        return None
    return _cleanup(parsed, path, filename, line, function, callee)


def _cleanup(
    parsed: _Parsed,
    path: list[tuple[ast.AST, str]],
    filename: str,
    line: int,
    function: str,
    callee: str | None,
) -> CleanupClause | None:
    try:
        found: tuple[str, int] | None = None
        exiting = callee is not None and callee.rsplit(".", 1)[-1] in ("__exit__", "__aexit__")
        if (
            exiting
            and path
            and isinstance(path[-1][0], (ast.With, ast.AsyncWith))
            and path[-1][1] == "header"
        ):
            found = "with", path[-1][0].lineno
        for node, part in reversed(path):
            if found is not None:
                break
            if isinstance(node, _Try) and part == "finalbody":
                first = node.finalbody[0].lineno
                above = range(first - 1, node.lineno - 1, -1)
                found = (
                    "finally",
                    next((n for n in above if parsed.lines[n - 1].lstrip().startswith("finally")), first),
                )
            elif isinstance(node, _Try) and part == "handlers":
                handler = next(h for h in node.handlers if h.lineno <= line <= _last_line(h))
                if _catches(handler, parsed.signal_names) is not None:
                    found = "except", handler.lineno
    except (ValueError, RecursionError, MemoryError):  # ast.unparse of a type nested too deep
        return None
    if found is None:
        return None
    kind, where = found
    return CleanupClause(
        filename=filename,
        line=where,
        code=_code(parsed.lines, where),
        kind=kind,
        function=function,
        frame_line=line,
    )


def _code(lines: list[str], line: int) -> str | None:
    """The text of a clause's line, as it may be shown: stripped, secrets redacted, made inert."""
    code = lines[line - 1].strip() if 0 < line <= len(lines) else None
    return visible(redact_code(code)) if code else None


def find_clauses(
    sample: ProcessSample, read_source: Callable[[str], str | None]
) -> tuple[tuple[SwallowingExcept, ...], tuple[CleanupClause, ...]]:
    """Around the main thread's current line, innermost first, each file read and parsed once: the
    clauses that would swallow a termination signal raised now (one at most a user-code frame), and
    the cleanup code it runs now (`cleanup_clause`)."""
    frames = list(_main_thread_frames(sample))
    user = [
        (i, f)
        for i, f in enumerate(frames)
        if not f.native and not is_library(f.filename) and not f.filename.startswith("<")
    ]
    parsed: dict[str, _Parsed | None] = {}
    swallowing: list[SwallowingExcept] = []
    cleanup: list[CleanupClause] = []
    seen: set[tuple[str, int]] = set()
    running_seen: set[tuple[str, int]] = set()
    for order, (index, frame) in enumerate(user):
        if frame.function in _EXPRESSION_FRAMES:
            continue  # before its file is read: no clause of it can hold such a frame
        if frame.filename not in parsed:
            source = _read(read_source, frame.filename)
            parsed[frame.filename] = None if source is None else _parse(source, frame.filename)
        tree = parsed[frame.filename]
        path = None if tree is None else _frame_path(tree, frame.line, frame.function)
        if tree is None or path is None:
            continue
        caller_goes_on = order < len(user) - 1
        clause = _swallowing(tree, path, frame.filename, frame.line, frame.function, caller_goes_on)
        if clause is not None and (clause.filename, clause.line) not in seen:
            seen.add((clause.filename, clause.line))
            swallowing.append(clause)
        callee = next((f.function for f in reversed(frames[:index]) if not f.native), None)
        running = _cleanup(tree, path, frame.filename, frame.line, frame.function, callee)
        if running is not None and (running.filename, running.line) not in running_seen:
            running_seen.add((running.filename, running.line))
            cleanup.append(running)
    return tuple(swallowing), tuple(cleanup)


def find_swallowing(
    sample: ProcessSample, read_source: Callable[[str], str | None]
) -> tuple[SwallowingExcept, ...]:
    """The clauses that would swallow a termination signal raised in the main thread now, innermost
    first: one at most for each user-code frame of its latest sample, each file read once."""
    return find_clauses(sample, read_source)[0]


def _read(read_source: Callable[[str], str | None], filename: str) -> str | None:
    try:
        return read_source(filename)
    except (OSError, UnicodeError, ValueError):
        return None


def _main_thread_frames(sample: ProcessSample) -> Sequence[Frame]:
    """The main thread's frames in the latest dump, innermost first (none if it is not in it)."""
    if not sample.dumps:
        return ()
    latest = {thread.thread_id for thread in sample.dumps[-1]}
    for view in thread_views(sample):
        if view.is_main and view.latest.thread_id in latest:
            return view.latest.frames
    return ()


def _aliases(tree: ast.Module) -> frozenset[str]:
    """Names the module binds to the signal classes (`from prefect.exceptions import
    TerminationSignal as Stop`)."""
    return frozenset(
        alias.asname
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.asname and alias.name in _SIGNAL_CLASSES
    )


def _path(body: Sequence[ast.stmt], line: int, function: str) -> list[tuple[ast.AST, str]]:
    """The statements around `line` in the scope it runs in, outermost first, each with the part
    of it (`body`, `handlers`, `orelse`, `finalbody`, `header`) that holds the line.

    Entering a nested def or class by its body starts afresh: a `try` around a definition does not
    cover the code it defines.
    """
    path: list[tuple[ast.AST, str]] = []
    statements: Sequence[ast.stmt] = body
    while True:
        node = next((s for s in statements if _first_line(s) <= line <= _last_line(s)), None)
        if node is None:
            return path
        if isinstance(node, _Scope) and _in_scope_body(node, line, function):
            path = []
            statements = node.body
            continue
        part, inner = _part(node, line)
        path.append((node, part))
        if not inner:
            return path
        statements = inner


def _in_scope_body(node: _ScopeNode, line: int, function: str) -> bool:
    """True when `line` runs in the def's (or class's) own frame, not the enclosing one.

    A one-line `def f(): ...` holds its header (run by the enclosing scope) and its body on the
    same line: the frame's function name tells which.
    """
    if not node.body or line < node.body[0].lineno:
        return False
    return not (line == node.lineno and function.rsplit(".", 1)[-1] != node.name)


def _part(node: ast.stmt, line: int) -> tuple[str, Sequence[ast.stmt]]:
    """Which part of a compound statement holds `line`, and that part's statements."""
    for name in ("body", "orelse", "finalbody"):
        statements = getattr(node, name, None)
        if isinstance(statements, list) and _spans(statements, line):
            return name, statements
    for handler in getattr(node, "handlers", ()):
        if isinstance(handler, ast.ExceptHandler) and handler.lineno <= line <= _last_line(handler):
            return "handlers", handler.body
    for case in getattr(node, "cases", ()):  # match (3.10+)
        if isinstance(case, ast.match_case) and _spans(case.body, line):
            return "cases", case.body
    return "header", ()


def _spans(statements: Sequence[ast.stmt], line: int) -> bool:
    return bool(statements) and _first_line(statements[0]) <= line <= _last_line(statements[-1])


def _first_line(node: ast.stmt) -> int:
    """A statement's first line, decorators included."""
    decorators: list[ast.expr] = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


def _last_line(node: ast.stmt | ast.ExceptHandler) -> int:
    return node.end_lineno if node.end_lineno is not None else node.lineno


def _catching_handler(
    node: ast.Try, names: frozenset[str], caller_goes_on: bool
) -> tuple[ast.AST, str, bool] | None:
    """The handler a termination signal would enter, what it catches, and whether it leaves the
    loop around it (`break`, `return`: the flow goes on after it); None when no handler catches
    the signal or the one that does lets it through."""
    for handler in node.handlers:
        catches = _catches(handler, names)
        if catches is None:
            continue
        ending = _ending(handler.body)
        if ending in ("raise", "exit") or (ending == "return" and not caller_goes_on):
            return None
        return handler, catches, ending in ("break", "return")
    return None


def _catches(handler: ast.ExceptHandler, names: frozenset[str]) -> str | None:
    """What of a termination signal the handler catches, as written; None when it does not."""
    if handler.type is None:
        return "except:"
    types = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return next((ast.unparse(t) for t in types if _names_signal(t, names)), None)


def _names_signal(node: ast.expr, names: frozenset[str]) -> bool:
    return _last_name(node) in names


def _last_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _ending(body: Sequence[ast.stmt]) -> str | None:
    """How a handler's body surely ends: "raise", "exit", "return", "break", "continue", or None
    when it runs to its end (or only ends on a condition that is not the signal's)."""
    for statement in body:
        ending: str | None = None
        if isinstance(statement, ast.Raise):
            ending = "raise"
        elif isinstance(statement, ast.Expr) and _is_exit(statement.value):
            ending = "exit"
        elif isinstance(statement, (ast.Return, ast.Break, ast.Continue)):
            ending = type(statement).__name__.lower()
        elif isinstance(statement, (ast.With, ast.AsyncWith)):  # its body always runs
            ending = _ending(statement.body)
        elif isinstance(statement, ast.Try):  # its `finally` always runs
            ending = _ending(statement.finalbody)
        elif isinstance(statement, ast.If):
            taken = _true_for_signal(statement.test)
            if taken is not None:
                ending = _ending(statement.body if taken else statement.orelse)
        if ending is not None:
            return ending
    return None


def _is_exit(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    try:
        called = ast.unparse(node.func)
    except (ValueError, RecursionError):  # pragma: no cover - unparse of a parsed tree
        return False
    return called in _EXITS


def _true_for_signal(test: ast.expr) -> bool | None:
    """What an `if`'s test is for a `TerminationSignal` (`isinstance(exc, ExternalSignal)`: True,
    `not isinstance(exc, Exception)`: True, `type(exc) is BaseException`: False); None when it
    does not test the exception's type."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        value = _true_for_signal(test.operand)
        return None if value is None else not value
    if isinstance(test, ast.BoolOp):
        values = [_true_for_signal(v) for v in test.values]
        if None in values:
            return None
        return all(values) if isinstance(test.op, ast.And) else any(values)
    if (
        isinstance(test, ast.Call)
        and _last_name(test.func) in ("isinstance", "issubclass")
        and len(test.args) == 2
    ):
        kinds = test.args[1]
        types = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
        if not all(_last_name(t) for t in types):
            return None
        return any(_last_name(t) in _SIGNAL_CLASSES for t in types)
    if (
        isinstance(test, ast.Compare)
        and len(test.ops) == 1
        and isinstance(test.ops[0], (ast.Is, ast.Eq, ast.IsNot, ast.NotEq))
        and isinstance(test.left, ast.Call)
        and _last_name(test.left.func) == "type"
        and _last_name(test.comparators[0]) is not None
    ):
        exact = _last_name(test.comparators[0]) == "TerminationSignal"
        return exact if isinstance(test.ops[0], (ast.Is, ast.Eq)) else not exact
    return None


def _suppressing_item(
    node: ast.With | ast.AsyncWith, names: frozenset[str]
) -> tuple[ast.AST, str, bool] | None:
    """A `contextlib.suppress(...)` of the `with` that suppresses a termination signal."""
    for item in node.items:
        call = item.context_expr
        if not isinstance(call, ast.Call) or _last_name(call.func) != "suppress":
            continue
        matched = next((a for a in call.args if _names_signal(a, names)), None)
        if matched is not None:
            return call, f"contextlib.suppress({ast.unparse(matched)})", False
    return None

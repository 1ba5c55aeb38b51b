"""Message templates: one folder per template under ``config/templates/<channel>/<name>/``.

| channel | files |
| --- | --- |
| email | ``subject.txt`` and ``body.txt`` and/or ``body.html`` |
| sms | ``body.txt`` |
| push | ``title.txt`` and ``body.txt`` |

Templates are Jinja2 with ``StrictUndefined``; every variable they use must be a customer
column or ``campaign``/``date``, which :meth:`MessageTemplate.check` proves before anything
is sent. A variable whose every use is guarded, ``{{ first_name | default("there") }}`` or
``{% if first_name is defined %}``, is optional: the file may lack that column.
"""

from __future__ import annotations

import itertools
import re
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

import jinja2
from jinja2 import meta

from .exceptions import MessageError, TemplateError

# A channel's template parts: groups of files of which at least one must exist (see
# channels.Channel.parts), e.g. (("subject.txt",), ("body.txt", "body.html")).
Parts = tuple[tuple[str, ...], ...]
# Customers rendered before anything is sent: a template that fails for every one of them
# fails for everyone (a method called on a text value), and stops the channel instead.
SAMPLE_ROWS = 50
# What ends a line in a mail header, or has no place in one: CR, LF and the other C0
# controls but the tab, DEL, NEL and Unicode's line and paragraph separators.
LINE_BREAK = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")


class MessageTemplate:
    """The compiled parts of one channel's template, rendered per customer."""

    def __init__(self, templates_dir: str, channel: str, name: str, parts: Parts):
        self.folder = Path(templates_dir) / channel / name
        if not self.folder.is_dir():
            raise TemplateError(f"{channel} template {name!r}: no folder {self.folder}")
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.folder),
            undefined=jinja2.StrictUndefined,
            autoescape=jinja2.select_autoescape(["html"]),
            keep_trailing_newline=False,
        )
        self.variables: set[str] = set()  # used at least once without a guard
        self.optional: set[str] = set()  # only ever used guarded
        self.parts = {}
        for group in parts:
            present = [part for part in group if (self.folder / part).exists()]
            if len(group) > 1 and not present:
                needs = " or ".join(group)
                raise TemplateError(f"{channel} template {self.folder}: needs {needs}")
            for part in present or group:  # a missing single part is named by _compile
                self.parts[part] = self._compile(part)

    def _compile(self, part: str) -> jinja2.Template:
        path = self.folder / part
        try:
            source = utf8_text(path)
            tree = self.env.parse(source)
            self._check_included(tree, path)
            required, optional = split_guarded(tree, meta.find_undeclared_variables(tree))
            self.variables |= required
            self.optional |= optional
            template = self.env.get_template(part)
            # a plain dict rather than jinja's ChainMap of the template's and the
            # environment's globals: each render copies them, and a ChainMap costs about
            # 3 us a part to copy (some 7 % of the send loop's time per email)
            template.globals = dict(template.globals)
            return template
        except FileNotFoundError:
            raise TemplateError(f"template part missing: {path}") from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template {path} line {exc.lineno}: {exc.message}") from None

    def _check_included(self, tree: jinja2.nodes.Template, path: Path, seen: tuple = ()) -> None:
        """Every template *tree* includes, imports or extends by name exists, is UTF-8 and
        compiles: jinja would load it only when rendering, for every customer alike."""
        for name in meta.find_referenced_templates(tree):
            if name is None or name in seen:  # a name computed when rendering; a loop
                continue
            try:
                source = self.env.loader.get_source(self.env, name)[0]
            except jinja2.TemplateNotFound:
                raise TemplateError(
                    f"template {path} includes {name!r}, which is not in {self.folder}"
                ) from None
            except UnicodeDecodeError:
                utf8_text(self.folder / name)  # raises, naming the file and the byte
                raise
            included = self.folder / name
            try:
                self._check_included(self.env.parse(source), included, (*seen, name))
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(
                    f"template {included} line {exc.lineno}: {exc.message}"
                ) from None

    def check_one_line(self, part: str) -> None:
        """Fail when *part* (a header, such as an email's subject) holds a line break of
        its own: a header is one line, and the provider would send the break (or refuse).
        Breaks at its start or end are trimmed when rendering; what customers' values
        bring in is refused per recipient (:func:`line_break`)."""
        if part not in self.parts:
            return
        path = self.folder / part
        source = utf8_text(path)
        trimmed = source.strip()
        skipped = source[: source.index(trimmed)].count("\n") if trimmed else 0
        for node in self.env.parse(trimmed).find_all(jinja2.nodes.TemplateData):
            if found := LINE_BREAK.search(node.data):
                line = skipped + node.lineno + node.data.count("\n", 0, found.start())
                raise TemplateError(
                    f"template {path} line {line}: a line break in {part}, which is a header "
                    "of one line; write it on one line"
                )

    def check(self, fields: set[str]) -> None:
        """Fail unless every variable the template uses is among *fields*."""
        unknown = sorted(self.variables - fields)
        if unknown:
            hint = ""
            if set(unknown) & self.optional:
                hint = "; a fallback in one place does not cover the others: guard every use"
            raise TemplateError(
                f"template {self.folder} uses {', '.join(unknown)}, which no customer has "
                f"(available: {', '.join(sorted(fields))}; for an optional column write "
                f'{{{{ {unknown[0]} | default("...") }}}}{hint})'
            )

    def render(self, context: dict[str, str]) -> dict[str, str]:
        """Return each part rendered for one customer, keyed by file name.

        Whatever a part raises (``{{ 1 / points }}`` with a zero, a filter on a value of the
        wrong type) is raised as a :class:`MessageError` naming the part and its line: it
        is this customer's data meeting the template, not a fault of the run."""
        rendered = {}
        for part, template in self.parts.items():
            try:
                rendered[part] = template.render(context).strip()
            except (jinja2.TemplateNotFound, jinja2.TemplateSyntaxError, UnicodeDecodeError) as exc:
                # an included file gone or changed since the check: no customer can be sent
                raise TemplateError(
                    f"template {self.folder / part}: {type(exc).__name__}: {exc}"
                ) from None
            except Exception as exc:
                where = f"{self.folder.parent.name}/{self.folder.name}/{part}"
                lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__)
                         if f.filename == template.filename]  # fmt: skip
                if lines:
                    where += f" line {lines[-1]}"
                raise MessageError(f"template {where}: {type(exc).__name__}: {exc}") from None
        return rendered


GUARD_FILTERS = {"default", "d"}
GUARD_TESTS = {"defined", "undefined"}


def split_guarded(tree: jinja2.nodes.Template, names: set[str]) -> tuple[set[str], set[str]]:
    """(names used at least once unguarded, names used guarded) among *names*.

    A use is guarded when the name itself is the subject of a ``default``/``d`` filter or a
    ``defined``/``undefined`` test: those work with ``StrictUndefined``, anything else on an
    undefined name (printing it, ``first_name.upper()``, ``first_name | upper``) raises."""
    guarded: set[int] = set()
    for node in tree.find_all((jinja2.nodes.Filter, jinja2.nodes.Test)):
        kinds = GUARD_FILTERS if isinstance(node, jinja2.nodes.Filter) else GUARD_TESTS
        if node.name in kinds and isinstance(node.node, jinja2.nodes.Name):
            guarded.add(id(node.node))
    required, optional = set(), set()
    for name in tree.find_all(jinja2.nodes.Name):
        if name.ctx == "load" and name.name in names:
            (optional if id(name) in guarded else required).add(name.name)
    return required, optional


def utf8_text(path: Path) -> str:
    """The text of the template file *path*; a TemplateError naming the first byte that is
    not UTF-8, and where, when it is in another encoding."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateError(
            f"template {path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}; save it as UTF-8"
        ) from None


def line_break(text: str) -> bool:
    """Whether *text* holds a line break or another control character a header cannot."""
    return LINE_BREAK.search(text) is not None


def check_renders(build: Callable[[dict], object], rows: Iterable[dict], where: str) -> None:
    """Raise a TemplateError when *build* (render and build one customer's request) fails
    for each of the first :data:`SAMPLE_ROWS` of *rows*, real customers: then the template
    fails for everyone, and failing them one by one would fail the whole file for good.
    One customer built is enough: what fails later is that customer's data."""
    failed = []
    for row in itertools.islice(rows, SAMPLE_ROWS):
        try:
            build(row)
            return
        except MessageError as exc:
            failed.append(exc)
    if failed:
        raise TemplateError(
            f"{where} fails for each of the first {len(failed)} customer(s), so for everyone "
            f"({failed[0]}); nothing was sent: fix it and rerun"
        )

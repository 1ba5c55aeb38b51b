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

import traceback
from pathlib import Path

import jinja2
from jinja2 import meta

from .exceptions import MessageError, TemplateError

# A channel's template parts: groups of files of which at least one must exist (see
# channels.Channel.parts), e.g. (("subject.txt",), ("body.txt", "body.html")).
Parts = tuple[tuple[str, ...], ...]


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
            source = path.read_text(encoding="utf-8")
            tree = self.env.parse(source)
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

"""``smtpproto.TRANSITIONS`` as a table and as a diagram, at build time.

Both are read from the code when the docs are built, so the pages cannot
drift from it.  ``TRANSITIONS[state][command type][first digit of the
reply]`` is the new state; a digit absent from an entry leaves the state
unchanged and a command absent from a state's row is out of sequence
there.  Each state's description comes from its ``#:`` comment in
``smtpproto._state``.

Usage, with no arguments::

    .. smtp-transitions::

    .. smtp-state-diagram::
       :fold: QUIT

``smtp-transitions`` renders the table.  ``smtp-state-diagram`` draws the
states as boxes on a layered layout and every change of state as a
labelled arrow, in pure Python (no graphviz or other program), inlines the
SVG in the HTML page and writes it to ``_images/smtp-states.svg`` beside
the pages; under the picture it lists what the picture leaves out.  The
commands named in ``:fold:`` are listed there instead of drawn (QUIT leads
to CLOSED from nearly every state).  The one change of state that is not
in the table, TLS to GREETED once the handshake is done, is found by
running both connection classes through STARTTLS, and drawn dashed.
"""

from __future__ import annotations

import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.pycode import ModuleAnalyzer
from sphinx.util.docutils import SphinxDirective
from sphinx.util.typing import ExtensionMetadata

import smtpproto
from smtpproto import (
    TRANSITIONS,
    ClientConnection,
    Ehlo,
    Event,
    ServerConfig,
    ServerConnection,
    StartTLS,
    State,
)
from smtpproto._state import next_state

_HEADERS = ("State", "Command event", "First digit of the reply \u2192 new state")
_WIDTHS = (40, 20, 40)


def _cell(*children: nodes.Node) -> nodes.entry:
    entry = nodes.entry()
    entry += nodes.paragraph("", "", *children)
    return entry


def _command(kind: type) -> nodes.Node:
    """The event class, linked to its API entry, and what it stands for."""
    link: nodes.Node = nodes.literal(text=kind.__name__)
    if getattr(smtpproto, kind.__name__, None) is kind:
        link = addnodes.pending_xref(
            "",
            link,
            refdomain="py",
            reftype="class",
            reftarget=f"smtpproto.{kind.__name__}",
            refexplicit=True,
            refwarn=True,
        )
    note = {"Reply": " (the greeting)", "EndOfMessage": " (the end of data)"}
    return nodes.inline("", "", link, nodes.Text(note.get(kind.__name__, "")))


def _outcomes(outcomes: Mapping[int, State]) -> str:
    if not outcomes:
        return "any reply: unchanged"
    shown = ", ".join(f"{digit}xx \u2192 {new.name}" for digit, new in sorted(outcomes.items()))
    return f"{shown}; otherwise unchanged"


class SmtpTransitions(SphinxDirective):
    """Render ``smtpproto.TRANSITIONS`` as a docutils table."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        analyzer = ModuleAnalyzer.for_module(State.__module__)
        # Re-read this page whenever the module holding the table changes.
        self.env.note_dependency(analyzer.srcname)
        docs = analyzer.find_attr_docs()
        group = nodes.tgroup(cols=len(_HEADERS))
        for width in _WIDTHS:
            group += nodes.colspec(colwidth=width)
        head = nodes.row()
        for title in _HEADERS:
            head += _cell(nodes.Text(title))
        group += nodes.thead("", head)
        body = nodes.tbody()
        for state in State:
            row_of_state = TRANSITIONS.get(state)
            if row_of_state is None:
                raise self.error(f"smtpproto.TRANSITIONS has no row for {state}")
            items: list[tuple[type[Event], Mapping[int, State]] | None]
            items = [*row_of_state.items()] or [None]
            for index, item in enumerate(items):
                row = nodes.row()
                if index == 0:
                    cell = _cell(nodes.strong(text=state.name))
                    about = " ".join(docs.get(("State", state.name), [])).strip()
                    if about:
                        cell += nodes.paragraph(text=about)
                    cell["morerows"] = len(items) - 1
                    row += cell
                if item is None:
                    row += _cell(nodes.emphasis(text="none"))
                    row += _cell(nodes.Text("every command is out of sequence"))
                else:
                    row += _cell(_command(item[0]))
                    row += _cell(nodes.Text(_outcomes(item[1])))
                body += row
        group += body
        table = nodes.table("", group, classes=["smtp-transitions"])
        return [table]


# -- the diagram: what to draw ---------------------------------------------

#: What the table's keys that are not commands stand for.
_NAMES = {
    "Reply": "greeting",
    "EndOfMessage": "end of data",
    "BdatLast": "BDAT LAST",
    "AuthResponse": "response",
    "AuthCancel": "*",
}
_FINAL = frozenset({2, 4, 5})


def _verb(kind: type) -> str:
    verb = getattr(kind, "verb", None)
    return verb if isinstance(verb, str) else _NAMES.get(kind.__name__, kind.__name__)


def _digits(digits: frozenset[int]) -> str:
    if digits == _FINAL:
        return "any"
    return " ".join(f"{digit}xx" for digit in sorted(digits))


def _lines(moves: Sequence[tuple[type, frozenset[int]]]) -> list[str]:
    """``EHLO/HELO/LHLO/RSET 2xx``: commands grouped by the digits that move."""
    groups: dict[frozenset[int], list[str]] = {}
    for kind, digits in moves:
        groups.setdefault(digits, []).append(_verb(kind))
    return [f"{'/'.join(verbs)} {_digits(digits)}" for digits, verbs in groups.items()]


def _after_handshake() -> State:
    """Where both roles go once the TLS handshake after STARTTLS is done,
    found by running each connection class through STARTTLS."""
    server = ServerConnection(ServerConfig(starttls=True))
    client = ClientConnection()
    client.receive_data(server.send(server.greeting()))
    client.next_event()
    for command in (Ehlo(domain="client.example"), StartTLS()):
        server.receive_data(client.send(command))
        server.next_event()
        client.receive_data(server.send(server.default_reply()))
        client.next_event()
    if not server.state is client.state is State.TLS:
        raise RuntimeError(f"STARTTLS led to {server.state} and {client.state}, not TLS")
    server.tls_established()
    client.tls_established()
    if server.state is not client.state:
        raise RuntimeError(f"after the handshake: server {server.state}, client {client.state}")
    return server.state


@dataclass
class _Edge:
    src: State
    dst: State
    lines: list[str]
    dashed: bool = False
    # Layout, filled in by _Layout.
    points: tuple[tuple[float, float], ...] = ()
    label_at: tuple[float, float] = (0.0, 0.0)


@dataclass
class _Graph:
    """What the diagram shows, and what its legend lists instead."""

    edges: list[_Edge] = field(default_factory=list)
    #: Replies that keep a state where it is, written inside its box.
    loops: dict[State, list[str]] = field(default_factory=dict)
    #: Folded commands: label -> the states they leave.
    folded: dict[str, list[State]] = field(default_factory=dict)
    #: Commands that never change the state -> the states allowing them.
    inert: dict[str, list[State]] = field(default_factory=dict)
    #: True when a 421 closes the session from every entry of the table.
    closes_on_421: bool = False


def _graph(fold: Sequence[str]) -> _Graph:
    """The moves of ``TRANSITIONS`` as arrows, loops and legend entries.

    The moves of the commands named in *fold* are listed in the legend
    instead of drawn, except from a state that no other arrow would leave:
    there the moves to one target are drawn, the target of the last verb
    in *fold* that the state has (so REFUSED still shows its QUIT, and
    GREETED its EHLO but not its QUIT, with ``:fold: QUIT RSET EHLO``).
    """
    graph = _Graph()
    moves: dict[tuple[State, State], list[tuple[type, frozenset[int]]]] = {}
    loops: dict[State, list[tuple[type, frozenset[int]]]] = {}
    folded: dict[tuple[State, State], list[tuple[type, frozenset[int]]]] = {}
    inert: dict[type, list[State]] = {}
    for state in State:
        for kind, outcomes in TRANSITIONS.get(state, {}).items():
            if not outcomes:
                inert.setdefault(kind, []).append(state)
                continue
            by_target: dict[State, set[int]] = {}
            for digit, new in outcomes.items():
                by_target.setdefault(new, set()).add(digit)
            for new, digits in by_target.items():
                move = (kind, frozenset(digits))
                if new is state:
                    loops.setdefault(state, []).append(move)
                elif _verb(kind) in fold:
                    folded.setdefault((state, new), []).append(move)
                else:
                    moves.setdefault((state, new), []).append(move)
    # A state no arrow would leave gets back the moves to one target: that
    # of the last folded verb it has, trying the verbs from the last named.
    stuck = {src for src, _ in folded} - {src for src, _ in moves}
    for src in (state for state in State if state in stuck):
        for verb in reversed(fold):
            dst = next(
                (d for (s, d), found in folded.items()
                 if s is src and any(_verb(kind) == verb for kind, _ in found)),
                None,
            )
            if dst is not None:
                moves[(src, dst)] = folded.pop((src, dst))
                break
    listed: dict[str, list[State]] = {}
    for (src, dst), found in folded.items():
        for line in _lines(found):
            listed.setdefault(f"{line} \u2192 {dst.name}", []).append(src)
    graph.edges = [_Edge(src, dst, _lines(found)) for (src, dst), found in moves.items()]
    graph.edges.append(_Edge(State.TLS, _after_handshake(), ["handshake done"], dashed=True))
    graph.loops = {state: _lines(found) for state, found in loops.items()}
    graph.folded = listed
    by_states: dict[tuple[State, ...], list[str]] = {}
    for kind, states in inert.items():
        by_states.setdefault(tuple(states), []).append(_verb(kind))
    graph.inert = {", ".join(verbs): list(states) for states, verbs in by_states.items()}
    graph.closes_on_421 = all(
        next_state(state, kind, 421) is State.CLOSED
        for state, row in TRANSITIONS.items()
        for kind in row
    )
    return graph


# -- the diagram: where to draw it -----------------------------------------

_FONT = 12.0  # px, monospace, so that text widths are known
_CHAR = 7.3  # px per character at _FONT
_LINE = 15.0  # px per text line
_PAD = 10.0  # px inside a box
_ROW_GAP = 78.0  # px between rows of boxes, where the labels go
_COL_GAP = 46.0  # px between boxes of one row
_LANE = 34.0  # px between edges that bow around the side
_MARGIN = 12.0


def _text_width(lines: Sequence[str]) -> float:
    return max((len(line) for line in lines), default=0) * _CHAR


@dataclass
class _Box:
    state: State
    lines: list[str]
    layer: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top
    width: float = 0.0
    height: float = 0.0

    @property
    def left(self) -> float:
        return self.x - self.width / 2

    @property
    def right(self) -> float:
        return self.x + self.width / 2

    @property
    def bottom(self) -> float:
        return self.y + self.height


def _layers(graph: _Graph) -> dict[State, int]:
    """Longest-path layering from CONNECTED, once the edges that close a
    cycle are set aside; the states no drawn arrow leaves (CLOSED, ERROR)
    go to the bottom row."""
    succ: dict[State, list[State]] = {state: [] for state in State}
    for edge in graph.edges:
        succ[edge.src].append(edge.dst)
    back: set[tuple[State, State]] = set()
    done: set[State] = set()
    on_path: list[State] = []

    def visit(state: State) -> None:
        on_path.append(state)
        for nxt in succ[state]:
            if nxt in on_path:
                back.add((state, nxt))
            elif nxt not in done:
                visit(nxt)
        on_path.pop()
        done.add(state)

    for state in State:
        if state not in done:
            visit(state)
    layer = {state: 0 for state in State}
    changed = True
    while changed:
        changed = False
        for edge in graph.edges:
            if (edge.src, edge.dst) not in back and layer[edge.dst] < layer[edge.src] + 1:
                layer[edge.dst] = layer[edge.src] + 1
                changed = True
    sinks = [state for state in State if not succ[state] and not TRANSITIONS.get(state)]
    bottom = max((layer[s] for s in State if s not in sinks), default=0) + 1
    for state in sinks:
        layer[state] = bottom
    return layer


class _Layout:
    """Boxes in rows, ordered to limit crossings, and a path for each arrow."""

    def __init__(self, graph: _Graph) -> None:
        self.graph = graph
        self.boxes = {
            state: _Box(state, [state.name, *(f"\u21bb {line}" for line in graph.loops.get(state, []))])
            for state in State
        }
        for box in self.boxes.values():
            box.width = _text_width(box.lines) + 2 * _PAD
            box.height = len(box.lines) * _LINE + 2 * _PAD - 4
        for state, number in _layers(graph).items():
            self.boxes[state].layer = number
        self.rows: list[list[_Box]] = []
        for box in sorted(self.boxes.values(), key=lambda b: b.layer):
            while len(self.rows) <= box.layer:
                self.rows.append([])
            self.rows[box.layer].append(box)
        self._order()
        self._place()
        self._route()

    def _neighbours(self, box: _Box, above: bool) -> list[_Box]:
        found = []
        for edge in self.graph.edges:
            src, dst = self.boxes[edge.src], self.boxes[edge.dst]
            if above and dst is box and src.layer < box.layer:
                found.append(src)
            elif not above and src is box and dst.layer > box.layer:
                found.append(dst)
        return found

    def _order(self) -> None:
        """A few barycentre sweeps, down then up (Sugiyama's heuristic)."""
        for sweep in range(6):
            down = sweep % 2 == 0
            rows = self.rows if down else list(reversed(self.rows))
            for row in rows:
                keys = {}
                for box in row:
                    near = self._neighbours(box, above=down)
                    keys[box.state] = (
                        sum(self._slot(other) for other in near) / len(near)
                        if near
                        else self._slot(box)
                    )
                row.sort(key=lambda box: keys[box.state])

    def _slot(self, box: _Box) -> float:
        row = self.rows[box.layer]
        return (row.index(box) + 0.5) / len(row) * len(max(self.rows, key=len))

    def _place(self) -> None:
        y = _MARGIN
        for row in self.rows:
            height = max(box.height for box in row)
            for box in row:
                box.y = y + (height - box.height) / 2
            y += height + _ROW_GAP
            wanted = []
            for box in row:
                near = self._neighbours(box, above=True)
                wanted.append(sum(b.x for b in near) / len(near) if near else None)
            right = -math.inf
            for box, want in zip(row, wanted):
                if want is None:
                    want = 0.0 if right == -math.inf else right
                box.x = max(want, right + _COL_GAP + box.width / 2)
                right = box.right
            pulls = [box.x - want for box, want in zip(row, wanted) if want is not None]
            if pulls:
                shift = sum(pulls) / len(pulls)
                for box in row:
                    box.x -= shift

    def _route(self) -> None:
        boxes = self.boxes
        ends: dict[tuple[State, str], list[tuple[float, _Edge, str]]] = {}
        lanes = {"left": 0, "right": 0}
        bowed: list[tuple[_Edge, str, float]] = []
        direct: list[_Edge] = []
        for edge in sorted(
            self.graph.edges, key=lambda e: abs(boxes[e.dst].layer - boxes[e.src].layer)
        ):
            src, dst = boxes[edge.src], boxes[edge.dst]
            if abs(dst.layer - src.layer) == 1:
                direct.append(edge)
                down = dst.layer > src.layer
                ends.setdefault((edge.src, "bottom" if down else "top"), []).append((dst.x, edge, "src"))
                ends.setdefault((edge.dst, "top" if down else "bottom"), []).append((src.x, edge, "dst"))
                continue
            # Around the nearer side of the boxes in the rows it spans,
            # counting the arrows already bowed around each side.
            low, high = sorted((src.layer, dst.layer))
            spanned = [b for b in boxes.values() if low <= b.layer <= high]
            middle = (src.x + dst.x) / 2
            right = max(b.right for b in spanned) + 24 + lanes["right"] * _LANE
            left = min(b.left for b in spanned) - 24 - lanes["left"] * _LANE
            side = "right" if right - middle <= middle - left else "left"
            outer = right if side == "right" else left
            lanes[side] += 1
            bowed.append((edge, side, outer))
            upward = dst.layer <= src.layer
            ends.setdefault((edge.src, "top" if upward else "bottom"), []).append((outer, edge, "src"))
            ends.setdefault((edge.dst, "bottom" if upward else "top"), []).append((outer, edge, "dst"))
        attach: dict[tuple[int, str], tuple[float, float]] = {}
        for (state, where), found in ends.items():
            box = boxes[state]
            found.sort(key=lambda item: item[0])
            for index, (_, edge, role) in enumerate(found):
                x = box.left + box.width * (index + 1) / (len(found) + 1)
                attach[(id(edge), role)] = (x, box.y if where == "top" else box.bottom)
        for edge in direct:
            (x0, y0), (x3, y3) = attach[(id(edge), "src")], attach[(id(edge), "dst")]
            middle = (y0 + y3) / 2
            edge.points = ((x0, y0), (x0, middle), (x3, middle), (x3, y3))
        for edge, side, outer in bowed:
            (x0, y0), (x3, y3) = attach[(id(edge), "src")], attach[(id(edge), "dst")]
            # The control points sit beyond `outer` so that the curve's far
            # point (t = 0.5) reaches it.
            control = (outer - 0.125 * (x0 + x3)) / 0.75
            rise = -1 if y3 < y0 else 1
            edge.points = (
                (x0, y0),
                (control, y0 + rise * _ROW_GAP * 0.6),
                (control, y3 - rise * _ROW_GAP * 0.6),
                (x3, y3),
            )
        self._place_labels()

    def _place_labels(self) -> None:
        """Each label on its arrow, as near the middle as it fits without
        covering a box or another label."""
        taken = [
            (box.left - 4, box.y - 4, box.right + 4, box.bottom + 4) for box in self.boxes.values()
        ]
        for edge in sorted(self.graph.edges, key=lambda e: -len(e.lines)):
            width = _text_width(edge.lines) + 6
            height = len(edge.lines) * _LINE
            for t in (0.5, 0.42, 0.58, 0.34, 0.66, 0.26, 0.74, 0.18, 0.82, 0.5):
                x, y = _bezier(edge.points, t)
                rect = (x - width / 2, y - height / 2, x + width / 2, y + height / 2)
                if not any(_overlap(rect, other) for other in taken):
                    break
            edge.label_at = (x, y)
            taken.append(rect)


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _bezier(points: Sequence[tuple[float, float]], t: float) -> tuple[float, float]:
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
    u = 1 - t
    return (
        u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
        u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3,
    )


# -- the diagram: SVG -------------------------------------------------------

_STYLE = """
text { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       font-size: 12px; fill: currentColor; }
text.state { font-weight: bold; }
.box { fill: none; stroke: currentColor; stroke-width: 1.4; }
.box.end { stroke-dasharray: 2 3; }
.edge { fill: none; stroke: currentColor; stroke-width: 1.1; opacity: 0.8; }
.edge.dashed { stroke-dasharray: 5 4; }
.label-bg { fill: var(--color-background-primary, #ffffff); opacity: 0.88; }
"""


def diagram_svg(graph: _Graph) -> str:
    """The SVG document of *graph*'s diagram."""
    layout = _Layout(graph)
    parts: list[str] = []
    xs: list[float] = []
    ys: list[float] = []
    for edge in graph.edges:
        p = edge.points
        d = f"M {p[0][0]:.1f} {p[0][1]:.1f} C " + " ".join(f"{x:.1f} {y:.1f}" for x, y in p[1:])
        style = "edge dashed" if edge.dashed else "edge"
        parts.append(f'<path class="{style}" d="{d}" marker-end="url(#smtp-arrow)"/>')
        for t in range(11):
            x, y = _bezier(p, t / 10)
            xs.append(x)
            ys.append(y)
    labels: list[str] = []
    for edge in graph.edges:
        x, y = edge.label_at
        width = _text_width(edge.lines) + 6
        height = len(edge.lines) * _LINE
        top = y - height / 2
        xs.extend((x - width / 2, x + width / 2))
        ys.extend((top, top + height))
        labels.append(
            f'<rect class="label-bg" fill="#ffffff" x="{x - width / 2:.1f}" y="{top:.1f}" '
            f'width="{width:.1f}" height="{height:.1f}" rx="3"/>'
        )
        for index, line in enumerate(edge.lines):
            labels.append(
                f'<text x="{x:.1f}" y="{top + (index + 0.75) * _LINE:.1f}" '
                f'text-anchor="middle">{escape(line)}</text>'
            )
    boxes: list[str] = []
    for box in layout.boxes.values():
        xs.extend((box.left, box.right))
        ys.extend((box.y, box.bottom))
        end = " end" if not TRANSITIONS.get(box.state) and box.state is not State.TLS else ""
        boxes.append(
            f'<rect class="box{end}" x="{box.left:.1f}" y="{box.y:.1f}" '
            f'width="{box.width:.1f}" height="{box.height:.1f}" rx="7"/>'
        )
        for index, line in enumerate(box.lines):
            cls = ' class="state"' if index == 0 else ""
            boxes.append(
                f'<text{cls} x="{box.x:.1f}" y="{box.y + _PAD + (index + 0.72) * _LINE - 2:.1f}" '
                f'text-anchor="middle">{escape(line)}</text>'
            )
    left, top = min(xs) - _MARGIN, min(ys) - _MARGIN
    width, height = max(xs) - left + _MARGIN, max(ys) - top + _MARGIN
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="smtp-state-diagram" role="img" '
            f'viewBox="{left:.0f} {top:.0f} {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" aria-labelledby="smtp-states-title">',
            '<title id="smtp-states-title">The SMTP session states of smtpproto and the '
            "replies that move between them, drawn from smtpproto.TRANSITIONS</title>",
            f"<style>{_STYLE}</style>",
            "<defs><marker id=\"smtp-arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" "
            'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
            '<path d="M 0 0 L 10 5 L 0 10 z" fill="currentColor"/></marker></defs>',
            *parts,
            *boxes,
            *labels,
            "</svg>",
        ]
    )


class state_diagram(nodes.General, nodes.Element):
    """The diagram: inline SVG in HTML, left out by other builders."""


def _visit_html(translator: Any, node: state_diagram) -> None:
    builder = translator.builder
    images = os.path.join(builder.outdir, "_images")
    os.makedirs(images, exist_ok=True)
    with open(os.path.join(images, node["filename"]), "w", encoding="utf-8") as file:
        file.write('<?xml version="1.0" encoding="UTF-8"?>\n' + node["svg"] + "\n")
    here = posixpath.dirname(builder.current_docname)
    link = posixpath.relpath(f"_images/{node['filename']}", here or ".")
    translator.body.append(
        '<figure class="smtp-state-diagram" style="overflow-x: auto; margin: 1em 0">'
        + node["svg"]
        + f'<figcaption><a href="{link}">{node["caption"]}</a></figcaption></figure>'
    )
    raise nodes.SkipNode


def _skip(translator: Any, node: state_diagram) -> None:
    raise nodes.SkipNode


def _state_list(states: Sequence[State]) -> str:
    return ", ".join(state.name for state in states)


class SmtpStateDiagram(SphinxDirective):
    """Draw ``smtpproto.TRANSITIONS`` as an SVG diagram, with its legend."""

    has_content = False
    option_spec = {"fold": directives.unchanged}

    def run(self) -> list[nodes.Node]:
        self.env.note_dependency(ModuleAnalyzer.for_module(State.__module__).srcname)
        fold = tuple(self.options.get("fold", "").split())
        graph = _graph(fold)
        node = state_diagram(
            svg=diagram_svg(graph),
            filename="smtp-states.svg",
            caption="The diagram as an SVG file",
        )
        legend = nodes.bullet_list()

        def item(*parts: nodes.Node | str) -> None:
            paragraph = nodes.paragraph()
            for part in parts:
                paragraph += nodes.Text(part) if isinstance(part, str) else part
            legend.append(nodes.list_item("", paragraph))

        item(
            "A box is a state; an arrow is a command (or the greeting, the end of "
            "data, a SASL response line) whose reply, by its first digit, moves the "
            "session; ",
            nodes.literal(text="any"),
            " means any final reply (2xx, 4xx or 5xx).  The lines marked \u21bb in a "
            "box are replies that keep the session in that state.",
        )
        item(
            "Dashed: the one move that is not in the table: ",
            nodes.literal(text="tls_established()"),
            ", called once the TLS handshake after STARTTLS is done, takes both roles "
            "from TLS back to GREETED (checked at build time by running both "
            "connection classes through STARTTLS).",
        )
        for label, sources in graph.folded.items():
            item(nodes.literal(text=label), f" from {_state_list(sources)} (not drawn).")
        for verbs, states in graph.inert.items():
            item(
                nodes.literal(text=verbs),
                f": allowed in {_state_list(states)}; they never change the state.",
            )
        if graph.closes_on_421:
            item(
                "A 421 reply, prompted or not, closes the session from any state "
                "(not drawn; ",
                nodes.literal(text="next_state()"),
                " applies it everywhere).",
            )
        item(
            "A peer's unrecoverable protocol error moves either role to ERROR from "
            "any state (",
            nodes.literal(text="RemoteProtocolError"),
            "); CLOSED and ERROR, dotted, accept nothing more.",
        )
        return [node, legend]


def setup(app: Sphinx) -> ExtensionMetadata:
    app.add_directive("smtp-transitions", SmtpTransitions)
    app.add_directive("smtp-state-diagram", SmtpStateDiagram)
    app.add_node(
        state_diagram,
        html=(_visit_html, None),
        latex=(_skip, None),
        text=(_skip, None),
        man=(_skip, None),
        texinfo=(_skip, None),
    )
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

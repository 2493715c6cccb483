"""A request in the terminal: ANSI colours, or plain text marks when colour is off.

Plain marks (also what the colours show):
    [x=>y]   System 2 changed System 1's x to y (in a speculative correction x is the rejected draft)
    <...>    a run of tokens where System 2 was consulted and kept System 1's token
    |        a speculative round starts
Whitespace inside marks is made visible (· ↵ →); text outside marks is printed as generated.
"""

from __future__ import annotations

import os

from fsgen.viewer.data import Job, Request, Token, job_summary, job_title, printable

RESET = "\x1b[0m"
STYLE = {
    "intervened": "\x1b[1;30;43m",  # bold black on yellow
    "s1": "\x1b[2;9;31m",  # dim, struck out, red: System 1's overridden choice
    "agreed": "\x1b[4;34m",  # underlined blue
    "round": "\x1b[35m",  # magenta round bar
    "after_stop": "\x1b[2m",  # dim
}


def use_colour(stream, choice: str = "auto") -> bool:
    """Colour when asked (`always`), or on `auto` when the stream is a terminal and NO_COLOR is unset."""
    if choice in ("always", "never"):
        return choice == "always"
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def mark_text(text: str) -> str:
    """Whitespace made visible inside a mark (no bare newline inside brackets)."""
    return printable(text).replace(" ", "·").replace("\n", "↵").replace("\t", "→") or "∅"


def paint(text: str, style: str, colour: bool) -> str:
    """`text` in `style`, reset before each newline so a background does not run to the margin."""
    if not colour or not text:
        return text
    return "\n".join(f"{STYLE[style]}{line}{RESET}" if line else line for line in text.split("\n"))


def groups(tokens: list[Token]) -> list[tuple[str, list[Token], bool]]:
    """Consecutive tokens of one kind within one round: (kind, tokens, starts a round)."""
    out: list[tuple[str, list[Token], bool]] = []
    previous_round = None
    for t in tokens:
        starts = t.round is not None and t.round != previous_round
        previous_round = t.round
        if (out and out[-1][0] == t.kind and t.kind != "intervened" and not starts
                and out[-1][1][-1].after_stop == t.after_stop):
            out[-1][1].append(t)
        else:
            out.append((t.kind, [t], starts))
    return out


def render_tokens(tokens: list[Token], colour: bool) -> str:
    pieces = []
    for kind, run, starts in groups(tokens):
        if starts:
            pieces.append(paint("|", "round", colour))
        if kind == "intervened":
            t = run[0]
            if colour:
                pieces.append(paint(mark_text(t.s1_text), "s1", True) + paint(mark_text(t.text), "intervened", True))
            else:
                pieces.append(f"[{mark_text(t.s1_text)}=>{mark_text(t.text)}]")
            continue
        text = printable("".join(t.text for t in run))
        if not colour:
            pieces.append(f"<{text}>" if kind == "agreed" else text)
        elif run[0].after_stop:
            pieces.append(paint(text, "after_stop", True))
        else:
            pieces.append(paint(text, "agreed", True) if kind == "agreed" else text)
    return "".join(pieces)


def render_request(request: Request, colour: bool) -> str:
    """Header line, the prompt's last line, then the marked generation."""
    head = request.where()
    v = request.verdict
    if v is not None:
        head.append(f"{v.label} ({v.metric} = {v.value:g}; target {v.target!r}, answer {v.answer!r})")
    head.append(request.summary())
    lines = [printable(" · ".join(head))]
    if request.prompt:
        lines.append(paint(printable("…" + request.prompt.rstrip("\n").split("\n")[-1]), "after_stop", colour))
    lines.append(render_tokens(request.tokens, colour))
    return "\n".join(lines)


def render_job(job: Job, request_ids: list[int], colour: bool) -> str:
    head = f"{job_title(job.metadata)}\n{job_summary(job.trace)}"
    if colour:
        legend = (f"{paint('x', 's1', True)}{paint('y', 'intervened', True)} System 2 changed x to y   "
                  f"{paint('z', 'agreed', True)} consulted, kept   {paint('|', 'round', True)} speculative round   "
                  f"{paint('e', 'after_stop', True)} after the returned text")
    else:
        legend = "[x=>y] System 2 changed x to y   <z> consulted, kept   | speculative round"
    if job.tokenizer_name is None:
        legend += "   (no tokenizer found: token ids)"
    blocks = [printable(head), legend] + [render_request(job.request(r), colour) for r in request_ids]
    return "\n\n".join(blocks) + "\n"

"""One self-contained HTML page per job: inline CSS, no script, every text HTML-escaped.

Each generated token is one `<span class="tok KIND" data-pos=P title=...>`; an intervened token
is preceded by System 1's own choice, struck out (`<s class="s1">`, a rejected draft in a
speculative correction). The title (shown on hover) gives both choices and their probabilities.
"""

from __future__ import annotations

from html import escape

from fsgen.viewer.data import Job, Request, Token, job_summary, job_title, printable

PROMPT_TAIL_CHARS = 160  # of the prompt, shown in grey before the generation

CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:1.5em auto;max-width:60em;padding:0 1em;color:#222;background:#fff}
h1{font-size:1.3em;margin:0 0 .3em}h2{font-size:1.05em;margin:0}
.meta,.sample,.stats{color:#555;margin:.2em 0}
.legend>span{margin-right:1.5em;white-space:nowrap}
section{border:1px solid #ddd;border-radius:6px;padding:.7em 1em;margin:1em 0}
section.correct{border-left:6px solid #2a9d4b}section.wrong{border-left:6px solid #c0392b}
.verdict{font-weight:600;padding:0 .4em;border-radius:3px}
.verdict.correct{background:#d8f3df;color:#1d6b34}.verdict.wrong{background:#f8d7d3;color:#8e2a1f}
.verdict.graded,.verdict.unscored{background:#eee;color:#444}
.gen{font:14px/1.9 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;word-break:break-word;margin-top:.5em}
.prompt-tail{color:#999}
.tok.intervened{background:#ffd54a;font-weight:700;border-radius:2px;outline:1px solid #e0a800}
.tok.agreed{border-bottom:2px dotted #4a90d9}
.tok.alone{}
.tok.after-stop{opacity:.45}
s.s1{color:#c0392b;font-size:.9em;margin-right:2px;text-decoration-thickness:1.5px}
.round-bar{display:inline-block;width:2px;height:1.1em;background:#8e44ad;margin:0 2px 0 3px;vertical-align:-.2em}
.role-draft{background:#efe6f7}
details{margin:.3em 0;color:#555}details pre{white-space:pre-wrap;font-size:12px;background:#f7f7f7;padding:.5em;max-height:20em;overflow:auto}
"""


def fmt_prob(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2f}"


def visible(text: str) -> str:
    """A token's text with whitespace-only tokens made visible (a highlighted newline shows)."""
    if text.strip():
        return text
    return text.replace(" ", "·").replace("\n", "↵\n").replace("\t", "→") or "∅"


def token_title(t: Token) -> str:
    head = f"position {t.position}"
    if t.kind == "intervened":
        what = (f"System 2 chose {t.text!r} (top-1 p={fmt_prob(t.s2_prob)}); "
                f"System 1 chose {t.s1_text!r} (p={fmt_prob(t.s1_prob)})")
    elif t.kind == "agreed":
        what = f"System 2 consulted (top-1 p={fmt_prob(t.s2_prob)}), kept System 1's {t.s1_text!r} (p={fmt_prob(t.s1_prob)})"
    else:
        what = f"System 1 alone: {t.s1_text!r} (p={fmt_prob(t.s1_prob)})"
    extra = []
    if t.round is not None:
        extra.append(f"round {t.round}, {t.role}" + (" (System 1's draft rejected)" if t.role == "correction" else ""))
    if t.after_stop:
        extra.append("after the end of the returned text")
    return "; ".join([f"{head}: {what}", *extra])


def token_html(t: Token, previous_round: int | None) -> str:
    """The token's span, after System 1's struck-out choice when System 2 changed it, after a
    bar when it starts a speculative round."""
    classes = ["tok", t.kind]
    if t.round is not None:
        classes.append(f"role-{t.role}")
    if t.after_stop:
        classes.append("after-stop")
    text = visible(t.text) if t.kind == "intervened" else t.text
    span = (f'<span class="{" ".join(classes)}" data-pos="{t.position}" title="{escape(printable(token_title(t)))}">'
            f"{escape(printable(text))}</span>")
    if t.kind == "intervened":
        span = f'<s class="s1" title="System 1\'s choice">{escape(printable(visible(t.s1_text)))}</s>' + span
    if t.round is not None and t.round != previous_round:
        span = f'<span class="round-bar" title="round {t.round}"></span>' + span
    return span


def verdict_html(request: Request) -> tuple[str, str]:
    """(section class, verdict badge) of a request."""
    v = request.verdict
    if v is None:
        return "unscored", '<span class="verdict unscored">not scored</span>'
    return v.label, f'<span class="verdict {v.label}">{v.label} ({escape(v.metric)} = {v.value:g})</span>'


def request_html(request: Request) -> str:
    section_class, badge = verdict_html(request)
    tokens = request.tokens
    stats = request.summary()
    if request.verdict is not None:
        stats += f"; target {request.verdict.target!r}, answer {request.verdict.answer!r}"
    if any(t.round is not None for t in tokens):
        stats += f"; {len({t.round for t in tokens})} speculative rounds"
    parts = [f'<section class="{section_class}">', f"<h2>{escape(' · '.join(request.where()))} {badge}</h2>",
             f'<p class="stats">{escape(printable(stats))}</p>']
    body = []
    if request.prompt is not None:
        parts.append(f"<details><summary>prompt ({len(request.prompt)} characters)</summary>"
                     f"<pre>{escape(printable(request.prompt))}</pre></details>")
        tail = request.prompt[-PROMPT_TAIL_CHARS:]
        body.append(f'<span class="prompt-tail">{"…" if len(tail) < len(request.prompt) else ""}'
                    f"{escape(printable(tail))}</span>")
    previous = None
    for t in tokens:
        body.append(token_html(t, previous))
        previous = t.round
    parts += [f'<div class="gen">{"".join(body)}</div>', "</section>"]
    return "\n".join(parts)


def legend_html(speculative: bool) -> str:
    items = ['<span><s class="s1">x</s><span class="tok intervened">y</span> System 2 changed System 1\'s x to y</span>',
             '<span><span class="tok agreed">z</span> System 2 consulted, kept System 1\'s token</span>',
             '<span><span class="tok alone">w</span> System 1 alone</span>']
    if speculative:
        items.append('<span><span class="round-bar"></span><span class="tok role-draft">d</span> '
                     'a speculative round starts; d an accepted draft</span>')
    items.append('<span><span class="tok after-stop">e</span> after the returned text (EOS, stop string)</span>')
    return '<p class="legend">' + " ".join(items) + "</p>"


def render_page(job: Job, request_ids: list[int], seed: int | None = None) -> str:
    """The page: job header, legend, then the given requests."""
    title = job_title(job.metadata)
    tokens = f"decoded with {job.tokenizer_name}" if job.tokenizer_name else "ids (no tokenizer found)"
    meta = f"{job_summary(job.trace)}. Trace: {job.path}. Tokens: {tokens}."
    chosen = f"{len(request_ids)} of {len(job.request_ids)} requests" + (f", drawn with seed {seed}" if seed is not None else "")
    requests = [request_html(job.request(r)) for r in request_ids]
    speculative = job.metadata.get("method") == "speculative"
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape('fsgen · ' + title)}</title>", f"<style>{CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>", f'<p class="meta">{escape(meta)}</p>', legend_html(speculative),
        f'<p class="sample">{escape(chosen)}; hover a token for both systems\' choices and probabilities.</p>',
        *requests, "</body></html>", ""])

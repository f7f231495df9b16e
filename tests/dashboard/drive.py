"""Drive the dashboard in headless Chromium (tests/dashboard.rs starts
modelgate, the mock and the traffic, then runs this).

MG_ADMIN, MG_GATEWAY: modelgate's listeners. MG_OUT: where screenshots go.
MG_MODE: `full` (every view against the JSON API, live refresh, no
overlapping text, screenshots) or `token` (login prompt, no data without
the token, the token never in a URL). MG_TOKEN: the admin token (token
mode). Prints one JSON line of what it checked; exits 1 with the reason on
the first failure."""

import json
import os
import re
import sys
import time
import urllib.request

from cdp import Browser

ADMIN = os.environ["MG_ADMIN"]
GATEWAY = os.environ["MG_GATEWAY"]
OUT = os.environ["MG_OUT"]
MODE = os.environ.get("MG_MODE", "full")
TOKEN = os.environ.get("MG_TOKEN", "")

VIEWS = ["overview", "budgets", "models", "routes", "experiments", "requests"]
checked = []


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    checked.append(msg)


def api(path):
    req = urllib.request.Request(ADMIN + path)
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def chat(app, content, user=None):
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    if user:
        body["user"] = user
    req = urllib.request.Request(
        GATEWAY + "/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": "Bearer sk-test", "x-modelgate-app": app},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        r.read()
        return r.headers["x-modelgate-request-id"]


def money(text):
    """A figure as the page shows it: the value and half its last digit."""
    m = re.search(r"-?\$?([0-9][0-9,]*)(?:\.([0-9]+))?", text)
    if not m:
        fail(f"no amount in {text!r}")
    whole, frac = m.group(1).replace(",", ""), m.group(2) or ""
    value = float(whole + ("." + frac if frac else ""))
    return value, 0.5 * 10 ** -len(frac) + 1e-12


def same_amount(shown, want, what):
    value, tol = money(shown)
    check(abs(value - want) <= tol, f"{what}: the page shows {shown}, the API says {want}")


def text_of(b, selector):
    return b.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); return e ? e.textContent : null; }})()")


def goto_view(b, name):
    before = b.eval(f"Number(document.querySelector('#view-{name}').dataset.rendered || 0)")
    b.eval(f"location.hash = '#{name}'")
    b.wait(f"Number(document.querySelector('#view-{name}').dataset.rendered || 0) > {before}", what=f"the {name} view to render")
    # One more refresh so charts are sized and data settled.
    n = b.eval(f"Number(document.querySelector('#view-{name}').dataset.rendered)")
    b.wait(f"Number(document.querySelector('#view-{name}').dataset.rendered) > {n}", what=f"the {name} view to refresh")


# Text nodes of the active view whose boxes overlap (uPlot's axes are
# canvas, spaced by uPlot; its legend is HTML and checked too).
OVERLAPS_JS = r"""
(() => {
  const root = document.querySelector('.view.active');
  const boxes = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const n = walker.currentNode;
    if (!n.textContent.trim()) continue;
    const r = document.createRange();
    r.selectNodeContents(n);
    // What a clipping ancestor (overflow hidden, ellipsis) hides is not shown.
    const clips = [];
    for (let el = n.parentElement; el && el !== document.body; el = el.parentElement) {
      const o = getComputedStyle(el);
      if (o.overflowX !== 'visible' || o.overflowY !== 'visible') clips.push(el.getBoundingClientRect());
    }
    for (const b0 of r.getClientRects()) {
      let b = { left: b0.left, right: b0.right, top: b0.top, bottom: b0.bottom };
      for (const c of clips) b = { left: Math.max(b.left, c.left), right: Math.min(b.right, c.right), top: Math.max(b.top, c.top), bottom: Math.min(b.bottom, c.bottom) };
      if (b.right - b.left > 0.5 && b.bottom - b.top > 0.5) boxes.push({ b, t: n.textContent.trim().slice(0, 40) });
    }
  }
  const out = [];
  for (let i = 0; i < boxes.length; i++) {
    for (let j = i + 1; j < boxes.length; j++) {
      const a = boxes[i].b, c = boxes[j].b;
      const w = Math.min(a.right, c.right) - Math.max(a.left, c.left);
      const h = Math.min(a.bottom, c.bottom) - Math.max(a.top, c.top);
      if (w > 2 && h > 2) out.push(boxes[i].t + ' | ' + boxes[j].t);
    }
  }
  // Text cut off inside its box (ellipsis aside) also counts.
  for (const el of root.querySelectorAll('.kpi .value, .hbars .val, .caption span, td')) {
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).textOverflow !== 'ellipsis' && getComputedStyle(el).overflow !== 'visible') out.push('cut: ' + el.textContent.slice(0, 40));
  }
  return out;
})()
"""


def no_overlaps(b, name):
    found = b.eval(OVERLAPS_JS)
    check(not found, f"{name}: no overlapping text (found: {found[:5]})")


def charts_have_data(b, name, want):
    n = b.eval(f"document.querySelectorAll('#view-{name} .chart .uplot').length")
    empty = b.eval(f"document.querySelectorAll('#view-{name} .chart .empty').length")
    check(n == want and empty == 0, f"{name}: {want} charts drawn with data, none empty (drawn {n}, empty {empty})")
    # A drawn chart has coloured pixels in its plot, not only axes.
    painted = b.eval(
        f"""[...document.querySelectorAll('#view-{name} .chart canvas')].map((c) => {{
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 3] > 0 && !(d[i] === d[i + 1] && d[i + 1] === d[i + 2])) n++;
              return n; }})"""
    )
    check(all(p > 50 for p in painted), f"{name}: every chart paints coloured data ({painted})")


def screenshot(b, name):
    path = b.screenshot(os.path.join(OUT, f"{name}.png"))
    b.screenshot(os.path.join(OUT, f"{name}-full.png"), full=True)
    return path


def console_errors(b):
    b.drain()
    errs = []
    for e in b.events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            errs.append(p["exceptionDetails"].get("exception", {}).get("description") or p["exceptionDetails"].get("text"))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errs.append(" ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            errs.append(p["entry"].get("text", "") + " " + p["entry"].get("url", ""))
    return errs


def urls(b):
    b.drain()
    return [e["params"]["request"]["url"] for e in b.events if e["method"] == "Network.requestWillBeSent"]


def full(b):
    b.navigate(ADMIN + "/")
    b.wait("Number(document.body.dataset.refreshes || 0) >= 1", what="the first render")
    check(b.eval("document.querySelector('#login').hidden"), "no login prompt without a token configured")

    # Overview: spend and savings as /admin/usage says.
    goto_view(b, "overview")
    day, month = api("/admin/usage?window=day"), api("/admin/usage?window=month")
    traffic = api("/admin/traffic?window=day")
    same_amount(text_of(b, '[data-k="spend-day"]'), day["total"]["cost_usd"], "spend today")
    same_amount(text_of(b, '[data-k="spend-month"]'), month["total"]["cost_usd"], "spend this month")
    check(text_of(b, '[data-k="savings-month-pct"]') == f"{month['total']['savings_pct']:.1f}%",
          f"savings %: page {text_of(b, '[data-k=savings-month-pct]')}, API {month['total']['savings_pct']}")
    check(month["total"]["savings_pct"] > 0, "the traffic saved money (routing to cheaper models)")
    same_amount(text_of(b, '[data-k="savings-month-usd"]'), month["total"]["savings_usd"], "savings $")
    check(text_of(b, '[data-k="requests-day"]') == f"{traffic['total']['requests']:,}", "requests today as /admin/traffic says")
    alerts = b.eval("[...document.querySelectorAll('#view-overview .alerts li')].map((l) => l.textContent)")
    check(any("billing-bot" in a for a in alerts), f"the budget past warn_at is an active alert ({alerts})")
    charts_have_data(b, "overview", 2)
    no_overlaps(b, "overview")
    screenshot(b, "overview")

    # Budgets: figures and bars as /admin/budgets says.
    goto_view(b, "budgets")
    budgets = api("/admin/budgets")["budgets"]
    check(len(budgets) >= 2, "two budgets to show")
    for bud in budgets:
        sel = f'[data-budget="{bud["name"]}"]'
        same_amount(text_of(b, sel + ' [data-limit-kind="usd"] [data-k="budget-spent"]'), bud["spent_usd"], f"budget {bud['name']} spent")
        same_amount(text_of(b, sel + ' [data-limit-kind="usd"] [data-k="budget-limit"]'), bud["limit_usd"], f"budget {bud['name']} limit")
        ratio = b.eval(f"""(() => {{ const t = document.querySelector('{sel} [data-limit-kind="usd"] [data-k="budget-track"]').getBoundingClientRect();
                                  const f = document.querySelector('{sel} [data-limit-kind="usd"] [data-k="budget-fill"]').getBoundingClientRect();
                                  return f.width / t.width; }})()""")
        want = min(1.0, bud["spent_usd"] / bud["limit_usd"])
        check(abs(ratio - want) < 0.005, f"budget {bud['name']}: the bar is {ratio:.4f} of the track, spent/limit is {want:.4f}")
        check(want > 0.02, f"budget {bud['name']}: the bar is visible ({want:.3f})")
        check(bud["detail"] == text_of(b, sel + ' [data-k="budget-detail"]'), f"budget {bud['name']}: the state in words")
    no_overlaps(b, "budgets")
    screenshot(b, "budgets")

    # Models: charts over time, shares, breakers.
    goto_view(b, "models")
    charts_have_data(b, "models", 4)
    rows = b.eval("document.querySelectorAll('#view-models tr[data-model]').length")
    check(rows >= 3, f"the models table lists the models that served ({rows})")
    check(b.eval("document.querySelectorAll('#view-models .share span').length") >= 2, "shares by model drawn")
    no_overlaps(b, "models")
    screenshot(b, "models")
    n = b.eval("Number(document.querySelector('#view-models').dataset.rendered)")
    b.eval("document.querySelector('#view-models button[data-group=provider]').click()")
    b.wait(f"Number(document.querySelector('#view-models').dataset.rendered) > {n}", what="the models view by provider")
    legend = b.eval("[...document.querySelectorAll('#view-models [data-part=req-h] .u-legend .u-label')].map((l) => l.textContent)")
    check(set(legend) >= {"openai", "anthropic"}, f"over time by provider ({legend})")
    charts_have_data(b, "models", 4)
    screenshot(b, "models-by-provider")
    b.eval("document.querySelector('#view-models button[data-group=model]').click()")

    # Routes: decisions per route as /admin/traffic says.
    goto_view(b, "routes")
    traffic = api("/admin/traffic?window=day")
    for r in traffic["routes"]:
        shown = text_of(b, f'[data-route="{r["route"]}"] [data-k="route-requests"]')
        check(shown == f"{r['requests']:,}", f"route {r['route']}: {shown} requests shown, {r['requests']} in the API")
    check(b.eval("document.querySelectorAll('#view-routes .cols .b').length") >= 11, "a complexity chart is drawn")
    no_overlaps(b, "routes")
    screenshot(b, "routes")

    # Experiments: per-arm requests as /admin/usage by_arm says.
    goto_view(b, "experiments")
    arms = {k.split("/", 1)[1]: v for k, v in api("/admin/usage?window=month")["by_arm"].items() if k.startswith("rollout/")}
    exp = next(e for e in api("/admin/experiments?window=month")["experiments"] if e["route"] == "rollout")
    check(len(arms) == 2, f"both arms have charged requests ({list(arms)})")
    for arm, usage in arms.items():
        shown = text_of(b, f'[data-experiment="rollout"] tr[data-arm="{arm}"] [data-k="arm-requests"]')
        check(shown == f"{usage['requests']:,}", f"arm {arm}: {shown} requests shown, {usage['requests']} in /admin/usage by_arm")
        same_amount(text_of(b, f'[data-experiment="rollout"] tr[data-arm="{arm}"] [data-k="arm-cost"]'), usage["cost_usd"], f"arm {arm} cost")
        api_arm = next(a for a in exp["arms"] if a["arm"] == arm)
        q = text_of(b, f'[data-experiment="rollout"] tr[data-arm="{arm}"] [data-k="arm-quality"]')
        want_q = "–" if api_arm["feedback"]["mean_score"] is None else f"{api_arm['feedback']['mean_score']:.2f}"
        check(q == want_q, f"arm {arm}: quality {q} shown, {want_q} in the API")
    check(text_of(b, '[data-experiment="rollout"] [data-k="verdict"]') == exp["verdict"], "the verdict as the API words it")
    check(any(a["feedback"]["ratings"] > 0 for a in exp["arms"]), "ratings reached the experiment")
    no_overlaps(b, "experiments")
    screenshot(b, "experiments")

    # Requests: the ring, then a new request shows up without a reload.
    goto_view(b, "requests")
    recent = api("/admin/requests?limit=200")
    first = b.eval("document.querySelector('#requests-table tbody tr').dataset.requestId")
    check(first == recent["requests"][0]["request_id"], "the newest request first, as /admin/requests lists it")
    rows = b.eval("document.querySelectorAll('#requests-table tbody tr').length")
    check(rows == len(recent["requests"]), f"every kept request listed ({rows} rows, {len(recent['requests'])} in the API)")
    body = b.eval("document.querySelector('#view-requests').innerText")
    check("PROMPT-SECRET" not in body, "no prompt text in the Requests view")
    no_overlaps(b, "requests")
    screenshot(b, "requests")

    b.eval("window.__noReload = 'still here'")
    navigations = sum(1 for e in b.events if e["method"] == "Page.frameNavigated")
    new_id = chat("live-check", "show my tasks")
    b.wait(f"!!document.querySelector('tr[data-request-id=\"{new_id}\"]')", timeout=15, what="the new request to appear in Requests")
    check(b.eval("window.__noReload") == "still here", "the new request appeared without a page reload")
    b.drain()
    check(sum(1 for e in b.events if e["method"] == "Page.frameNavigated") == navigations, "no navigation happened")
    screenshot(b, "requests-live")

    # Filters: the server filters by app.
    b.eval("(() => { const s = document.querySelector('#view-requests select[name=app]'); s.value = 'live-check'; s.dispatchEvent(new Event('change')); })()")
    b.wait("[...document.querySelectorAll('#requests-table tbody tr')].length === 1", what="the app filter")
    check(text_of(b, "#requests-table tbody tr td:nth-child(3)") == "live-check", "the app filter keeps that app's requests")

    errs = console_errors(b)
    check(not errs, f"no console errors or CSP violations ({errs[:5]})")
    bad = [u for u in urls(b) if not u.startswith(ADMIN) and not u.startswith("data:")]
    check(not bad, f"the page loads nothing from elsewhere ({bad[:5]})")


def token(b):
    b.navigate(ADMIN + "/")
    b.wait("!document.querySelector('#login').hidden", what="the login prompt")
    check(b.eval("document.querySelector('#main').hidden"), "no dashboard without the token")
    check(b.eval("document.querySelectorAll('[data-k]').length") == 0, "no figures in the page without the token")
    text = b.eval("document.body.innerText")
    check("$" not in text and "daily-total" not in text and "gpt-4o" not in text, f"no data in the page without the token: {text[:300]!r}")
    check(text_of(b, "#token-var") == "MG_TEST_ADMIN_TOKEN", "the prompt names the token's variable")
    screenshot(b, "login")

    b.eval("document.querySelector('#token').focus()")
    b.insert_text("not-the-token")
    b.eval("document.querySelector('#login-form').requestSubmit()")
    b.wait("document.querySelector('#login-error').textContent.length > 0", what="the wrong-token message")
    check("not accepted" in text_of(b, "#login-error"), "a wrong token is refused with a message")
    check(b.eval("document.querySelector('#main').hidden"), "still no dashboard after a wrong token")

    b.eval("document.querySelector('#token').value = ''; document.querySelector('#token').focus()")
    b.insert_text(TOKEN)
    b.eval("document.querySelector('#login-form').requestSubmit()")
    b.wait("!document.querySelector('#main').hidden && !!document.querySelector('[data-k=\"spend-day\"]')", what="the dashboard after signing in")
    check(b.eval("document.querySelector('#login').hidden"), "the prompt is gone after the right token")

    # Asked once: a reload keeps the session.
    b.reload()
    b.wait("Number(document.body.dataset.refreshes || 0) >= 1 && !!document.querySelector('[data-k=\"spend-day\"]')", what="the dashboard after a reload")
    check(b.eval("document.querySelector('#login').hidden"), "no second prompt after a reload (asked once per tab)")
    b.eval("location.hash = '#requests'")
    b.wait("!!document.querySelector('#requests-table')", what="the requests table with the token")

    seen = urls(b)
    check(seen, "requests were made")
    check(not [u for u in seen if TOKEN in u], "the token is in no URL the page requested")
    check(TOKEN not in b.eval("location.href"), "the token is not in the page's URL")
    sent = [e["params"]["request"].get("headers", {}) for e in b.events if e["method"] == "Network.requestWillBeSent" and "/admin/" in e["params"]["request"]["url"]]
    check(any(h.get("Authorization") == "Bearer " + TOKEN for h in sent), "the token goes as an Authorization: Bearer header")
    errs = [e for e in console_errors(b) if "401" not in e]
    check(not errs, f"no console errors besides the refused calls ({errs[:5]})")
    screenshot(b, "after-login")


def main():
    os.makedirs(OUT, exist_ok=True)
    b = Browser()
    try:
        full(b) if MODE == "full" else token(b)
    except BaseException:
        # What the page looked like when it went wrong.
        try:
            b.screenshot(os.path.join(OUT, "failure.png"))
            print("page text at the failure:", b.eval("document.body.innerText")[:2000], file=sys.stderr)
            print("console:", console_errors(b)[:10], file=sys.stderr)
        except Exception as e:
            print("(no screenshot of the failure:", e, ")", file=sys.stderr)
        raise
    finally:
        b.close()
    print(json.dumps({"ok": True, "mode": MODE, "checks": len(checked), "screenshots": OUT}))


if __name__ == "__main__":
    main()

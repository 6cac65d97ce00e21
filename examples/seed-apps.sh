#!/usr/bin/env bash
# The seed apps, end to end from lmosh: create the files they need (a multi-line FAQ, a catalogue, a
# headline file) with lmosh's own `write` here-documents, then run each app once.  Prints a transcript:
# each lmosh command after "lmosh> ", then what it printed.
#
# usage: examples/seed-apps.sh [STATE_DIR]
#   STATE_DIR  a state directory (default: a fresh temporary one).  If a kernel is running on it
#              (`lmos up`), the commands go through that kernel; otherwise this script starts one with
#              `lmos up` and stops it at the end.
#   LMOS_MODEL the model for a kernel this script starts: builtin (default), scripted[:REPLY], or a
#              model directory.
#   LMOS_BIN   the folder holding the lmos and lmosh commands (default: found on PATH).
#
# Files that already exist in STATE_DIR are not replaced (lmosh asks before replacing a file, and a
# script cannot answer), so a re-run uses the files of the first run.
set -uo pipefail

BIN=${LMOS_BIN:+$LMOS_BIN/}
STATE=${1:-$(mktemp -d)/state}
MODEL=${LMOS_MODEL:-builtin}

if ! "${BIN}lmos" status --state-dir "$STATE" >/dev/null 2>&1; then
    "${BIN}lmos" up --state-dir "$STATE" --model "$MODEL" >/dev/null || exit 1
    trap '"${BIN}lmos" down --force --state-dir "$STATE" >/dev/null 2>&1' EXIT
fi

lmosh() {  # show one command (a here-document spans lines), then run it on the state directory
    printf 'lmosh> %s\n' "$1"
    "${BIN}lmosh" --state-dir "$STATE" -c "$1" 2>&1
    echo
}

# -- support: answers from the FAQ, or hands the question to a human ---------------------------
lmosh "run support how long do refunds take?"   # no FAQ yet: the app says how to create it
lmosh "write /support/faq.md <<EOF
How long do refunds take?
Refunds are paid back to your card within 5 business days of us receiving the return.

Do you ship abroad?
We ship to 30 countries. Shipping is free on orders over 50 euros.

How do I reset my password?
Use the forgot password link on the login page; the reset email arrives within a few minutes.

Can I change my order after paying?
You can change or cancel an order within one hour of paying, from the Orders page.
EOF"
lmosh "cat /support/faq.md"
lmosh "run support how long until I get my refund?"
lmosh "run support I forgot my password, what do I do?"
lmosh "run support do you sell gift vouchers?"

# -- sentiment-monitor: labels headlines, alerts when the negative share crosses a threshold ----
lmosh "write /news/headlines.txt <<EOF
Acme Corp beats quarterly earnings estimates and raises full-year guidance
Regional bank shares plunge after surprise loss
Oil prices fall 5% as demand outlook weakens
Retailer warns of weaker holiday sales and cuts jobs
Central bank leaves interest rates unchanged
Chipmaker shares soar to a record on strong AI demand
EOF"
lmosh "run sentiment-monitor --window 3 --threshold 0.6 --file /news/headlines.txt"

# -- recommend: ranks the catalogue for a customer, the model pitches the best item ------------
lmosh 'write /recommend/catalogue.jsonl <<EOF
{"id": "t1", "title": "Trail tent", "tags": ["camping", "hiking"], "description": "light two-person tent for hiking trips"}
{"id": "b1", "title": "Hiking boots", "tags": ["hiking", "waterproof"], "description": "waterproof leather boots for long hikes"}
{"id": "k1", "title": "Chef knife", "tags": ["kitchen"], "description": "steel knife for everyday cooking"}
{"id": "p1", "title": "Pasta maker", "tags": ["kitchen", "cooking"], "description": "makes fresh pasta at home"}
{"id": "e1", "title": "E-reader", "tags": ["books", "travel"], "description": "glare-free screen, weeks of battery"}
EOF'
lmosh "run recommend loves hiking and camping in the mountains"
lmosh "run recommend enjoys cooking fresh pasta at home"

# -- team: a planner splits the request, worker processes solve the parts, the answers combine --
lmosh "run team what is 12 times 7 and 15% of 200, then add them"

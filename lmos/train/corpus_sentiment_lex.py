"""The lexicon of the sentiment task: events, noun phrases, metrics, moves and headline structures.

Data only.  Each ``labelled`` block has lines ``p|``, ``n|`` or ``z|``
(positive, negative, neutral) and the entry; a structure line may name
several labels (``pn|``) it can carry.  Slots (``{co}``, ``{pct}``,
``{amount}``, ``{q}``, ...) are filled by :mod:`lmos.train.corpus_sentiment`.
Labels are the investor's reading of the event for the company named first.
"""

from __future__ import annotations

LABELS = {"p": "positive", "n": "negative", "z": "neutral"}


def labelled(block: str) -> list[tuple[str, str]]:
    """``(labels letters, text)`` per line."""
    out = []
    for line in block.strip().splitlines():
        tags, _, text = line.strip().partition("|")
        out.append((tags.strip(), text.strip()))
    return out


# company predicates in headline present tense ("Acme beats estimates")
PREDICATES = labelled("""
p| beats profit estimates
p| beats {q} earnings expectations
p| tops analyst forecasts
p| raises full-year guidance
p| lifts its annual outlook
p| posts record {q} profit
p| reports record revenue
p| swings to a profit in {qin}
p| wins {amount} contract
p| secures {amount} defence contract
p| lands major supply deal with {other}
p| receives FDA approval for {product}
p| gets regulatory approval for new drug
p| raises dividend by {pct}%
p| announces {amount} share buyback
p| boosts quarterly dividend
p| is upgraded to buy at {bank}
p| upgraded to outperform by analysts
p| hits all-time high
p| agrees to be acquired by {other} at a {pct}% premium
p| returns to profit
p| doubles quarterly profit
p| reports better-than-expected sales
p| upgrades its profit forecast
p| posts {pct}% jump in quarterly profit
p| reports surge in orders
p| exceeds revenue forecasts
p| announces special dividend
p| unveils bumper results
p| reports robust growth in {qin}
p| has credit rating raised to {rating}
p| reports record deliveries
p| sees strong demand for {product}
p| expands margins for a third straight quarter
p| wins patent case against {other}
p| signs lucrative partnership with {other}
p| pays off debt early
p| gains market share
p| smashes sales records
p| shares soar on takeover bid
p| wins approval for new plant
p| lands record order from {other}
p| reports profit ahead of forecasts
p| turns profitable a year early
p| sees revenue beating targets
p| expects sales to double
p| posts strongest growth in a decade
p| secures funding to expand
p| beats on revenue and raises forecast
p| is added to the {index}
p| rises to record after strong results
p| reports higher-than-expected margins
p| outperforms rivals in {qin}
p| wins {amount} government order
p| hikes payout to shareholders
p| cuts losses sharply
p| narrows its loss in {qin}
p| tops {q} profit forecasts
p| beats Wall Street estimates
p| raises outlook after strong quarter
p| lifts dividend
p| unveils share repurchase plan
p| wins regulatory approval
p| gets green light for {product}
p| posts record sales
p| reports bumper profit
p| boosts full-year forecast
p| upgraded by {bank}
p| sees record demand
n| misses profit estimates
n| falls short of {q} revenue forecasts
n| cuts full-year guidance
n| lowers its annual outlook
n| warns on profits
n| issues profit warning
n| posts {q} loss
n| swings to a loss
n| reports wider-than-expected loss
n| announces {n} job cuts
n| to cut {n} jobs
n| lays off {pct}% of staff
n| files for bankruptcy
n| files for Chapter 11 protection
n| recalls {n} vehicles over safety fault
n| recalls {product} after safety complaints
n| faces lawsuit over faulty products
n| is sued by investors over misleading statements
n| fined {amount} by regulators
n| under investigation for accounting irregularities
n| suspends dividend
n| slashes dividend
n| downgraded to sell at {bank}
n| is downgraded by analysts
n| hits record low
n| defaults on bond payment
n| loses major contract with {other}
n| halts production at {city} plant
n| to close {n} stores
n| CEO resigns amid accounting probe
n| has credit rating cut to junk
n| writes down {amount} of assets
n| posts sharp drop in sales
n| sees demand slump
n| delays product launch again
n| loses key customer
n| breaches loan covenants
n| reports data breach affecting {n} customers
n| hit by strike at main factory
n| loses patent case against {other}
n| warns of weaker demand
n| shares plunge on fraud allegations
n| swings to surprise loss
n| misses on revenue and cuts forecast
n| reports lower-than-expected margins
n| scraps dividend
n| expects sales to fall
n| posts biggest loss in its history
n| faces probe over safety lapses
n| warns it may run out of cash
n| is dropped from the {index}
n| loses {pct}% of its customers
n| sees orders collapse
n| shuts main factory after fire
n| delays earnings report, citing accounting issues
n| blames weak demand for falling profit
n| is hit with {amount} fine
n| loses appeal in tax case
n| reports widening losses in {qin}
n| suffers cyberattack
n| hit by ransomware attack
n| says customer data was stolen
n| misses Wall Street estimates
n| slashes outlook
n| trims full-year forecast
n| plans to shed {n} jobs
n| seeks bankruptcy protection
n| enters administration
n| recalls cars over brake defect
n| sued over patent infringement
n| faces class action lawsuit
n| fined by EU regulators
n| cut to underweight at {bank}
n| posts record loss
n| sees profit plunge
n| warns of lower sales
n| reports sales slump
z| to report {q} results on {date}
z| schedules annual shareholder meeting for {date}
z| to hold investor day on {date}
z| names {person} chief financial officer
z| appoints {person} as chairman
z| appoints new head of marketing
z| files annual report
z| files quarterly report with the SEC
z| completes previously announced acquisition of {other}
z| agrees to acquire {other} for {amount}
z| announces date of {q} earnings call
z| moves headquarters to {city}
z| opens new office in {city}
z| launches redesigned website
z| to present at industry conference in {city}
z| changes its name to {newname}
z| publishes {year} financial calendar
z| reaffirms full-year outlook
z| declares regular quarterly dividend
z| completes share consolidation
z| changes auditor
z| lists bonds on the {city} exchange
z| announces board changes
z| publishes sustainability report
z| to change fiscal year end
z| announces results of annual general meeting
z| signs lease for new headquarters in {city}
z| reports results in line with expectations
z| keeps guidance unchanged
z| to webcast {q} conference call
z| appoints {person} to its board
z| says CEO {person} will retire next year as planned
z| comments on market speculation
z| sets record date for dividend
z| prices {amount} bond offering
z| to rebrand its stores
z| to release earnings after the market closes on {date}
z| CEO to speak at investor conference
z| holds annual general meeting in {city}
z| announces new board member
z| confirms dividend payment date
z| publishes annual report for {year}
z| files notice of annual meeting
z| updates investor presentation
z| names {person} head of investor relations
z| to move listing to the {city} exchange
z| completes planned office relocation
z| issues statement on trading volume
z| says results due on {date}
z| reports no change to its outlook
z| schedules conference call for {date}
z| to publish {qin} figures next week
z| enters talks with unions over pay
z| to hold earnings call on {date}
z| sets date for annual meeting
z| names new chief operating officer
z| appoints {person} as CFO
z| files form 10-K
z| announces executive changes
z| relocates office to {city}
z| to attend investor conference in {city}
z| announces quarterly dividend of {small} cents
z| to present {q} results on {date}
""")

# noun phrases of events ("... after {np}")
EVENTS = labelled("""
p| strong earnings
p| record quarterly profit
p| upbeat guidance
p| a surprise profit
p| an analyst upgrade
p| a dividend hike
p| a big share buyback
p| a takeover offer
p| FDA approval
p| a major contract win
p| better-than-expected sales
p| robust demand
p| strong holiday sales
p| a raised forecast
p| an earnings beat
p| a blowout quarter
p| a credit upgrade
p| rising orders
p| record orders
p| a profit upgrade
p| bumper results
p| a rating upgrade
n| weak earnings
n| a surprise loss
n| a profit warning
n| a guidance cut
n| an analyst downgrade
n| a dividend cut
n| job cuts
n| a product recall
n| a regulatory probe
n| a bankruptcy filing
n| disappointing sales
n| an accounting scandal
n| a credit downgrade
n| a lawsuit
n| an earnings miss
n| a data breach
n| a factory shutdown
n| falling orders
n| a cyberattack
n| a ransomware attack
n| a profit slump
n| weak guidance
n| mass layoffs
n| a safety recall
z| its annual meeting
z| a management reshuffle
z| a board appointment
z| a scheduled earnings call
z| an investor presentation
z| a routine filing
z| a name change
z| a headquarters move
z| an index rebalancing
z| a trading update in line with forecasts
z| a change of auditor
z| the dividend record date
z| an AGM
z| a board reshuffle
z| a planned CEO handover
z| a regular dividend
""")

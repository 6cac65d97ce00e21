"""Headline frames of the sentiment task: metrics, directions, share moves, whole headlines, structures.

Data only, in the format of :mod:`lmos.train.corpus_sentiment_lex` (``p|``,
``n|``, ``z|`` lines); the events the structures wrap live there.
"""

from __future__ import annotations

from lmos.train.corpus_sentiment_lex import labelled

# (metric noun, +1 when more is good for investors / -1 when more is bad, "s"|"p" for verb agreement)
METRICS = [
    ("revenue", 1, "s"), ("net profit", 1, "s"), ("sales", 1, "p"), ("earnings", 1, "p"),
    ("operating income", 1, "s"), ("margins", 1, "p"), ("orders", 1, "p"), ("deliveries", 1, "p"),
    ("subscriber numbers", 1, "p"), ("bookings", 1, "p"), ("market share", 1, "s"), ("cash flow", 1, "s"),
    ("same-store sales", 1, "p"), ("demand", 1, "s"), ("exports", 1, "p"), ("profit", 1, "s"),
    ("net income", 1, "s"), ("passenger numbers", 1, "p"), ("ad revenue", 1, "s"), ("output", 1, "s"),
    ("losses", -1, "p"), ("costs", -1, "p"), ("debt", -1, "s"), ("net loss", -1, "s"),
    ("expenses", -1, "p"), ("bad loans", -1, "p"), ("customer churn", -1, "s"), ("write-downs", -1, "p"),
    ("unsold inventory", -1, "s"), ("cash burn", -1, "s"),
]

# verbs of direction: (+1 up / -1 down / 0 flat, singular form, plural form, noun form)
DIRECTIONS = [
    (1, "rises", "rise", "rise"), (1, "climbs", "climb", "climb"), (1, "jumps", "jump", "jump"),
    (1, "grows", "grow", "growth"), (1, "increases", "increase", "increase"), (1, "surges", "surge", "surge"),
    (1, "soars", "soar", "surge"), (1, "doubles", "double", "rise"), (1, "rebounds", "rebound", "rebound"),
    (-1, "falls", "fall", "fall"), (-1, "drops", "drop", "drop"), (-1, "declines", "decline", "decline"),
    (-1, "slumps", "slump", "slump"), (-1, "shrinks", "shrink", "contraction"),
    (-1, "plunges", "plunge", "plunge"),
    (-1, "slides", "slide", "slide"), (-1, "sinks", "sink", "slump"), (-1, "halves", "halve", "drop"),
    (-1, "tumbles", "tumble", "tumble"), (-1, "contracts", "contract", "contraction"),
    (1, "up", "up", "rise"), (1, "higher", "higher", "rise"), (-1, "down", "down", "drop"),
    (-1, "lower", "lower", "drop"),
    (0, "is flat", "are flat", "flat reading"), (0, "holds steady", "hold steady", "steady reading"),
    (0, "is unchanged", "are unchanged", "unchanged reading"),
    (0, "stays level", "stay level", "level reading"),
]

# share moves: a whole phrase, its label
MOVES = labelled("""
p| shares jump
p| stock soars
p| shares rally
p| stock climbs
p| shares rise
p| shares surge
p| stock jumps
p| shares gain
p| stock rallies
p| shares climb
n| shares plunge
n| stock tumbles
n| shares slide
n| stock sinks
n| shares fall
n| shares drop
n| stock slumps
n| shares tumble
n| stock falls
n| shares sink
z| shares steady
z| stock little changed
z| shares flat
z| shares unchanged
z| stock steady
z| shares edge sideways
""")

# whole headlines about markets and the economy
MACRO = labelled("""
p| Stocks rally as inflation cools
p| {index} hits record high
p| Unemployment falls to {small}%, lowest in years
p| Economy grows faster than expected in {qin}
p| Consumer confidence jumps to a {small}-year high
p| Retail sales beat forecasts
p| Factory activity expands for a third month
p| {index} posts best week since {year}
p| Inflation eases more than expected
p| Exports surge to a record
p| Jobless rate falls to {small}%
p| GDP beats forecasts
p| Inflation slows to {small}%
p| Stocks climb to record
p| Markets rally after strong jobs report
n| {index} tumbles as recession fears mount
n| Inflation surges to {small}%
n| Unemployment rises to {small}%
n| Economy shrinks in {qin}
n| Retail sales slump
n| Factory output contracts sharply
n| Housing market slumps as mortgage rates climb
n| {index} suffers worst day since {year}
n| Consumer confidence falls to a {small}-year low
n| Bank failures spark market selloff
n| Jobless rate climbs to {small}%
n| GDP contracts in {qin}
n| Inflation jumps to {small}%
n| Stocks slump as rate fears grow
n| Markets tumble after weak jobs report
z| Central bank holds interest rates at {small}%
z| Central bank to publish meeting minutes on {date}
z| Markets await jobs data
z| {index} closes flat
z| Finance ministers meet in {city}
z| Government sets date for budget statement
z| Trading volumes thin ahead of holiday
z| {index} to add three companies in quarterly review
z| Statistics office to release inflation figures on {date}
z| Exchange extends trading hours from {date}
z| Unemployment holds at {small}%
z| GDP figures due on {date}
z| Inflation steady at {small}%
z| Stocks flat ahead of rate decision
z| Markets quiet before jobs report
""")

# whole headlines with the company inside (not first): investors, analysts, regulators act on it
FRAMED = labelled("""
p| Investors cheer {co}'s record quarter
p| Analysts upgrade {co} to buy
p| {bank} raises {co} price target
p| {other} to buy {co} at a {pct}% premium
p| Strong demand lifts {co} sales
p| Record orders boost {co}
p| Why {co} stock is soaring today
p| {co} beats the market after upbeat outlook
p| Rally in {co} continues as profit jumps
p| Upbeat forecast sends {co} higher
p| Investors pile into {co} after strong results
p| Traders bet on {co} recovery
p| {bank} lifts {co} to overweight
n| Regulators fine {co} {amount}
n| Investors dump {co} after profit warning
n| {bank} cuts {co} to sell
n| Court rules against {co} in patent case
n| Hackers breach {co} systems
n| Weak demand hits {co} profits
n| Why {co} stock is falling today
n| Lawsuit weighs on {co}
n| Recall costs drag {co} into the red
n| Ratings agency cuts {co} outlook to negative
n| Cyberattack hits {co}
n| Ransomware attack disrupts {co}
n| Customers flee {co} after outage
n| {bank} downgrades {co} to underweight
n| Short sellers target {co}
z| {bank} initiates coverage of {co} at neutral
z| {co} added to watch list ahead of results
z| What to expect from {co} earnings on {date}
z| {co} annual meeting set for {date}
z| {co} appoints {person} as chief executive
z| {bank} keeps {co} at hold
z| Shareholders of {co} to vote on board nominees
z| {co} to announce {q} results next week
z| {co} confirms date of capital markets day
z| Trading in {co} shares resumes after scheduled halt
z| {co} shares to start trading on {date}
z| {bank} reiterates {co} rating
z| {co} to hold AGM on {date}
""")

# reasons a headline gives, of the same reading ("... as demand rises")
CAUSES = labelled("""
p| as demand rises
p| on strong holiday sales
p| thanks to cost cuts
p| as new products sell well
p| on higher prices
p| as customers return
p| helped by strong exports
p| on booming cloud sales
n| as costs soar
n| amid weak demand
n| on supply chain problems
n| after a cyberattack
n| as customers cut spending
n| hit by higher interest rates
n| amid falling prices
n| as competition bites
z| as planned
z| ahead of its annual meeting
z| in a routine update
z| as expected
z| in line with its schedule
z| following a regular review
z| as previously announced
z| in a statement on {date}
""")

# headline structures; {co} the company, {pred} / {np} / {move} of the headline's label,
# {metric} ... {dir} a metric clause whose label is computed
STRUCTURES = labelled("""
pnz| {co} {pred}
pnz| {co} {pred}
pnz| {co} ({ticker}) {pred}
pnz| UPDATE 1-{co} {pred}
pnz| BRIEF-{co} {pred}
pnz| {co}: {pred}
pnz| Report: {co} {pred}
pnz| {co} {pred} - sources
pnz| {co} (NYSE: {ticker}) {pred}
pnz| Exclusive: {co} {pred}
pnz| {co} {pred}, company says
pnz| {co} {move} on {np}
pnz| {co} {move} as investors digest {np}
pnz| {co} {move} in wake of {np}
pnz| {co} {pred} {cause}
pn| {co} {metric} {dir} {cause}
pn| {co} {move} {cause}
pn| {co} {pred}; {move} {pct}%
pn| {co} {pred}, {move}
pnz| {co} {move} after {np}
pn| {co} {move} {pct}% on {np}
pnz| {co} {move} following {np}
pn| {np} sends {co} {movenoun}
pnz| {co} {metric} {dir}
pn| {co} {metric} {dir} {pct}%
pn| {co} {q} {metric} {dir} {pct}%
pn| {co}'s {metric} {dir} {pct}% in {qin}
pn| {co} reports {pct}% {dirnoun} in {metric}
pnz| {co} says {metric} {dir} in {qin}
pn| {co} {metric} {dir} {pct}% year on year
""")

COMPANY_SUFFIXES = [
    "Corp", "Inc", "Holdings", "Group", "plc", "AG", "Energy", "Bank", "Motors", "Pharma", "Airlines",
    "Foods", "Systems", "Mining", "Retail", "Capital", "Technologies", "Insurance", "Logistics", "Telecom",
    "Steel", "Biotech", "Semiconductor", "Brands", "", "", "", "",
]
BANKS = ["Goldman Sachs", "Morgan Stanley", "JPMorgan", "Barclays", "UBS", "Citi", "Jefferies",
         "HSBC", "Bernstein"]
INDEXES = ["S&P 500", "FTSE 100", "Nasdaq", "Dow", "DAX", "Nikkei", "Stoxx 600", "CAC 40", "Hang Seng"]
CITIES = ["Austin", "Dublin", "Singapore", "Frankfurt", "Toronto", "Lyon", "Osaka", "Denver",
          "Milan", "Leeds"]
RATINGS = ["A", "AA-", "BBB+", "investment grade", "A+"]
PEOPLE_FIRST = ["Maria", "John", "Priya", "Chen", "Laura", "David", "Aisha", "Tom", "Sofia", "Kenji"]
NAME_PARTS = [
    "North", "Blue", "Silver", "Iron", "Red", "Green", "Summit", "Atlas", "Horizon", "Ever", "Bright",
    "Stone",
    "Oak", "River", "Star", "Sun", "Peak", "Harbor", "Eagle", "Falcon", "Crystal", "Golden", "Nova", "Vertex",
]
NAME_ENDS = ["wind", "water", "line", "bridge", "field", "gate", "rock", "wood", "stone", "point", "view",
             "light", "path", "crest", "tech", "works", "dale", "ford", "way", "core"]

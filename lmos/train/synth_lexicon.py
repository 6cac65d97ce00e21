"""Word lists behind the synthetic declared tools of the v2 corpus (:mod:`lmos.train.synth_tools`).

A synthetic tool is built from an *object* (what it is about: "weather",
"order status"), a verb, one to three *parameter kinds* and a naming style, so
these short lists give thousands of distinct names and descriptions.  Objects
are split between train and held-out by family (:mod:`lmos.train.split`), so a
held-out tool's name and description use an object no training tool had; the
model can only get it right by reading the declaration.

A parameter kind is ``(names, JSON type, phrases, value source)``: the phrases
say how a user mentions the value (``in {v}``, ``for {v}``); every kind also
accepts the generic ``with {p} {v}`` forms (:data:`GENERIC_PHRASES`).
"""

from __future__ import annotations

from lmos.train.phrasings import _lines, _words

# (object phrase, verbs, parameter kinds (first is required), "q"uery or "a"ction)
OBJECTS: list[tuple[str, list[str], list[str], str]] = [
    ("weather", ["get", "check"], ["city", "date", "unit"], "q"),
    ("forecast", ["get", "check"], ["city", "date", "unit"], "q"),
    ("temperature", ["get", "check"], ["city", "unit"], "q"),
    ("air quality", ["get", "check"], ["city"], "q"),
    ("time zone", ["get", "look up"], ["city"], "q"),
    ("local time", ["get", "check"], ["city"], "q"),
    ("population", ["get", "look up"], ["city"], "q"),
    ("sunrise time", ["get", "look up"], ["city", "date"], "q"),
    ("stock price", ["get", "check", "look up"], ["symbol"], "q"),
    ("share price", ["get", "check"], ["symbol", "date"], "q"),
    ("exchange rate", ["get", "look up"], ["currency", "date"], "q"),
    ("crypto price", ["get", "check"], ["symbol", "currency"], "q"),
    ("market cap", ["get", "look up"], ["symbol"], "q"),
    ("flight status", ["get", "check", "track"], ["flight", "date"], "q"),
    ("train times", ["get", "look up"], ["city", "date"], "q"),
    ("order status", ["get", "check", "track"], ["order"], "q"),
    ("package location", ["track", "get"], ["order"], "q"),
    ("delivery date", ["get", "check"], ["order"], "q"),
    ("account balance", ["get", "check"], ["account"], "q"),
    ("invoice total", ["get", "look up"], ["order"], "q"),
    ("definition", ["get", "look up"], ["word", "language"], "q"),
    ("synonyms", ["get", "find"], ["word", "count"], "q"),
    ("rhymes", ["find", "get"], ["word", "count"], "q"),
    ("translation", ["get"], ["text", "language"], "q"),
    ("word count", ["get", "compute"], ["text"], "q"),
    ("reading time", ["estimate", "get"], ["text"], "q"),
    ("summary", ["get", "make"], ["text", "count"], "q"),
    ("news headlines", ["get", "fetch"], ["topic", "count"], "q"),
    ("search results", ["get", "fetch"], ["topic", "count"], "q"),
    ("recipe", ["find", "get"], ["dish", "count"], "q"),
    ("calories", ["get", "look up"], ["dish", "amount"], "q"),
    ("nutrition facts", ["get", "look up"], ["dish"], "q"),
    ("movie showtimes", ["get", "find"], ["title", "city", "date"], "q"),
    ("movie rating", ["get", "look up"], ["title"], "q"),
    ("book author", ["get", "look up"], ["title"], "q"),
    ("song lyrics", ["get", "find"], ["title"], "q"),
    ("album release date", ["get", "look up"], ["title"], "q"),
    ("match score", ["get", "check"], ["team", "date"], "q"),
    ("league table", ["get", "fetch"], ["team"], "q"),
    ("player stats", ["get", "look up"], ["person"], "q"),
    ("phone number", ["get", "look up", "find"], ["person"], "q"),
    ("email address", ["get", "look up", "find"], ["person"], "q"),
    ("birthday", ["get", "look up"], ["person"], "q"),
    ("calendar events", ["get", "list"], ["date", "count"], "q"),
    ("free slots", ["find", "get"], ["date", "person"], "q"),
    ("distance", ["get", "compute"], ["city", "place"], "q"),
    ("travel time", ["estimate", "get"], ["place", "city"], "q"),
    ("route", ["get", "plan"], ["place", "city"], "q"),
    ("parking spaces", ["find", "count"], ["place"], "q"),
    ("opening hours", ["get", "check"], ["place", "date"], "q"),
    ("restaurant rating", ["get", "look up"], ["place"], "q"),
    ("hotel prices", ["get", "compare"], ["city", "date"], "q"),
    ("ticket price", ["get", "check"], ["title", "date"], "q"),
    ("server status", ["get", "check"], ["host"], "q"),
    ("disk usage", ["get", "check"], ["host", "path"], "q"),
    ("cpu load", ["get", "check"], ["host"], "q"),
    ("ping time", ["measure", "get"], ["host", "count"], "q"),
    ("build status", ["get", "check"], ["project"], "q"),
    ("open issues", ["list", "count"], ["project", "count"], "q"),
    ("latest release", ["get", "find"], ["project"], "q"),
    ("file size", ["get", "check"], ["path"], "q"),
    ("line count", ["get", "count"], ["path"], "q"),
    ("inventory level", ["get", "check"], ["product"], "q"),
    ("product price", ["get", "look up"], ["product", "currency"], "q"),
    ("shipping cost", ["estimate", "get"], ["product", "city"], "q"),
    ("tax rate", ["get", "look up"], ["city"], "q"),
    ("loan payment", ["compute", "estimate"], ["amount", "rate", "count"], "q"),
    ("tip amount", ["compute", "get"], ["amount", "rate"], "q"),
    ("bmi", ["compute", "get"], ["weight", "height"], "q"),
    ("step count", ["get", "check"], ["date"], "q"),
    ("sleep score", ["get", "check"], ["date"], "q"),
    ("heart rate", ["get", "check"], ["date"], "q"),
    ("message", ["send"], ["person", "text"], "a"),
    ("email", ["send", "draft"], ["email", "text"], "a"),
    ("sms", ["send"], ["phone", "text"], "a"),
    ("reminder", ["set", "create", "add"], ["text", "date"], "a"),
    ("alarm", ["set", "create"], ["clock", "text"], "a"),
    ("timer", ["start", "set"], ["minutes", "text"], "a"),
    ("meeting", ["schedule", "book", "cancel"], ["person", "date"], "a"),
    ("table", ["book", "reserve"], ["place", "count", "date"], "a"),
    ("hotel room", ["book", "reserve", "cancel"], ["city", "date", "count"], "a"),
    ("taxi", ["book", "order", "call"], ["place", "clock"], "a"),
    ("order", ["cancel", "place", "refund"], ["order"], "a"),
    ("ticket", ["create", "open", "close"], ["text", "priority"], "a"),
    ("task", ["add", "create", "complete"], ["text", "date"], "a"),
    ("note", ["create", "save", "delete"], ["text", "title"], "a"),
    ("shopping item", ["add", "remove"], ["product", "count"], "a"),
    ("playlist", ["play", "create"], ["title"], "a"),
    ("song", ["play", "queue"], ["title", "person"], "a"),
    ("lights", ["turn on", "turn off", "dim"], ["room", "level"], "a"),
    ("thermostat", ["set"], ["room", "level", "unit"], "a"),
    ("door", ["lock", "unlock"], ["room"], "a"),
    ("payment", ["send", "request"], ["person", "amount", "currency"], "a"),
    ("invoice", ["create", "send"], ["person", "amount"], "a"),
    ("user account", ["create", "disable", "delete"], ["person", "email"], "a"),
    ("password", ["reset"], ["person"], "a"),
    ("backup", ["start", "restore"], ["host", "path"], "a"),
    ("deployment", ["start", "roll back"], ["project", "host"], "a"),
    ("service", ["restart", "stop", "start"], ["host", "project"], "a"),
    ("file", ["delete", "archive", "share"], ["path", "person"], "a"),
    ("calendar event", ["add", "create", "delete"], ["text", "date"], "a"),
    ("bookmark", ["save", "add"], ["url", "title"], "a"),
    ("web page", ["open", "fetch", "summarize"], ["url"], "q"),
    ("qr code", ["make", "generate"], ["url"], "a"),
    ("short link", ["make", "create"], ["url"], "a"),
]

# compound objects: "<modifier> <head>" (the head carries the split family)
MODIFIERS = _words("""
daily weekly monthly current latest total average monthly annual hourly local global team personal
public private recent upcoming remaining estimated official
""")
HEADS = _words("""
score rating index level balance usage count budget quota limit report forecast ranking summary
total progress status price rate cost
""")

# how each parameter kind is named, typed, mentioned and filled
PARAMS: dict[str, tuple[list[str], str, list[str], str]] = {
    "city": (["city", "location", "place_name", "town"], "string", ["in {v}", "for {v}", "at {v}"], "city"),
    "place": (["place", "destination", "venue", "address"], "string", ["at {v}", "to {v}"], "place"),
    "date": (["date", "day", "when"], "string", ["on {v}", "for {v}"], "date"),
    "unit": (["unit", "units"], "enum", ["in {v}"], "unit"),
    "symbol": (["symbol", "ticker", "stock"], "string", ["for {v}", "of {v}"], "symbol"),
    "currency": (["currency", "to_currency", "target_currency"], "string", ["in {v}", "to {v}"], "currency"),
    "flight": (["flight", "flight_number", "flight_id"], "string", ["{v}", "for flight {v}"], "code"),
    "order": (["order_id", "order", "order_number", "id"], "string", ["{v}", "for order {v}"], "code"),
    "account": (["account", "account_id", "iban"], "string", ["for account {v}", "of {v}"], "code"),
    "word": (["word", "term"], "string", ["for {v}", "of {v}", 'for "{v}"'], "word"),
    "language": (["language", "lang", "target_language"], "string", ["in {v}", "into {v}"], "language"),
    "text": (["text", "message", "content", "body"], "string", ['"{v}"', 'saying "{v}"', ': {v}'], "text"),
    "topic": (["topic", "query", "keyword", "q"], "string", ["about {v}", "on {v}", "for {v}"], "word"),
    "count": (["count", "limit", "n", "max_results"], "integer", ["top {v}", "{v} of them"], "small"),
    "dish": (["dish", "food", "meal"], "string", ["for {v}", "of {v}"], "dish"),
    "amount": (["amount", "value", "sum", "grams"], "number", ["of {v}", "for {v}"], "amount"),
    "title": (["title", "name", "movie", "book"], "string", ['"{v}"', "called {v}", "for {v}"], "title"),
    "team": (["team", "club"], "string", ["for {v}", "of {v}"], "team"),
    "person": (["person", "name", "contact", "recipient"], "string", ["for {v}", "to {v}"], "person"),
    "host": (["host", "server", "hostname"], "string", ["on {v}", "for {v}"], "host"),
    "path": (["path", "file", "filename"], "string", ["of {v}", "in {v}"], "path"),
    "project": (["project", "repo", "repository"], "string", ["for {v}", "of {v}"], "word"),
    "product": (["product", "item", "sku"], "string", ["for {v}", "of {v}"], "product"),
    "rate": (["rate", "percent", "interest_rate"], "number", ["at {v} percent", "at {v}%"], "small"),
    "weight": (["weight_kg", "weight"], "number", ["weighing {v} kg", "weight {v}"], "amount"),
    "height": (["height_m", "height"], "number", ["height {v}", "at {v} m"], "height"),
    "email": (["email", "to", "address"], "string", ["to {v}"], "email"),
    "phone": (["phone", "number", "to"], "string", ["to {v}"], "phone"),
    "clock": (["time", "at"], "string", ["at {v}", "for {v}"], "clock"),
    "minutes": (["minutes", "duration"], "integer", ["for {v} minutes", "{v} minutes"], "small"),
    "priority": (["priority", "level"], "enum", ["with {v} priority", "priority {v}"], "priority"),
    "room": (["room", "area", "zone"], "string", ["in the {v}", "in {v}"], "room"),
    "level": (["level", "percent", "brightness"], "integer", ["to {v}", "at {v}"], "small"),
    "url": (["url", "link", "page"], "string", ["{v}", "at {v}"], "url"),
}
GENERIC_PHRASES = ["with {p} {v}", "{p} {v}", "{p}: {v}", "{p}={v}", "where {p} is {v}"]
ENUMS = {"unit": [["celsius", "fahrenheit"], ["metric", "imperial"], ["c", "f"]],
         "priority": [["low", "normal", "high"], ["low", "medium", "high", "urgent"]]}

CITIES = _lines("""
Paris
Rome
Berlin
Tokyo
Lagos
Lima
Oslo
Cairo
Madrid
Seoul
Nairobi
Toronto
Boston
Denver
Mumbai
Hanoi
Dublin
Vienna
Prague
Lisbon
Sydney
Quito
Accra
Manila
Zurich
Austin
Porto
Kyoto
Athens
Warsaw
""")
PLACES = _lines("""
the airport
the station
Central Park
the office
city hall
the museum
the harbour
Main Street 5
the stadium
the library
""")
DISHES = _words("pizza lasagna curry ramen tacos paella risotto pancakes hummus falafel salad soup omelette")
LANGUAGES = _words("French German Spanish Italian Japanese Swahili Dutch Polish Korean Turkish Greek Hindi")
CURRENCIES = _words("EUR USD GBP JPY CHF CAD AUD SEK NOK INR BRL")
TEAMS = _lines("""
Arsenal
the Lakers
Ajax
Celtic
the Yankees
Benfica
the Bulls
Napoli
""")
ROOMS = _words("kitchen bedroom office hallway garage bathroom attic basement")
STATUS = _lines("""
on time
delayed by 20 minutes
delivered
in transit
cancelled
open
closed
sunny, 21 C
light rain, 14 C
cloudy, 9 C
running
down
healthy
""")

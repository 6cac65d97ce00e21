"""Word lists and phrasings of the synthetic corpus.

Kept apart from the generator so the wording can grow without touching the
logic.  Every template names its slots (``{e}``, ``{key}``, ``{value}``, ...);
the generator fills them.  Many phrasings per intent teach the model to route
on meaning rather than on one fixed sentence.
"""

from __future__ import annotations


def _lines(block: str) -> list[str]:
    """One phrasing per line (surrounding blank lines dropped, inner spaces kept)."""
    return [line.strip() for line in block.strip("\n").splitlines() if line.strip()]


def _words(block: str) -> list[str]:
    """Whitespace-separated single words."""
    return block.split()


CALC_ASK = _lines("""
what is {e}?
What is {e}?
what's {e}?
compute {e}
Compute {e}.
calculate {e}
Calculate {e} please
{e} = ?
{e}=?
how much is {e}?
How much is {e}
can you work out {e}?
solve {e}
quick math: {e}
please evaluate {e}
evaluate {e}
{e}
{e}?
what do you get for {e}?
I need {e}
tell me {e}
what does {e} come to?
could you calculate {e} for me?
result of {e}?
do the math: {e}
figure out {e}
hey, what's {e}
calc {e}
what is the value of {e}?
math question: {e}
""")

CALC_ANSWER = _lines("""
{e} = {r}.
{e} = {r}
The answer is {r}.
It's {r}.
{r}
That comes to {r}.
The result is {r}.
{e} is {r}.
It equals {r}.
You get {r}.
{r}.
That's {r}.
The value is {r}.
""")

CALC_ERROR_ANSWER = _lines("""
I can't compute that: {msg}.
That doesn't work: {msg}.
Sorry, {msg}.
The calculator says: {msg}.
""")

WORD_OPS = {
    "+": ["plus", "added to"],
    "-": ["minus"],
    "*": ["times", "multiplied by"],
    "/": ["divided by", "over"],
}


SET_ASK = _lines("""
remember that my {key} is {value}
Remember that my {key} is {value}.
my {key} is {value}, remember it
please remember my {key} is {value}
store {value} as {key}
save {key} = {value}
set {key} to {value}
please note: {key} is {value}
keep in mind that my {key} is {value}
note down my {key}: {value}
remember {key}: {value}
save this: {key} is {value}
store my {key}, it is {value}
can you remember that my {key} is {value}?
memorize {key} = {value}
put {value} under {key}
record my {key} as {value}
Save my {key} as {value}.
don't forget: my {key} is {value}
""")

SET_ANSWER = _lines("""
Saved: {key} = {value}.
OK, I'll remember that your {key} is {value}.
Got it, {key} is {value}.
Stored {value} as {key}.
Done. {key}: {value}.
Noted, your {key} is {value}.
I saved {key} as {value}.
Okay, {key} = {value} is stored.
""")

GET_ASK = _lines("""
what is my {key}?
What's my {key}?
what's my {key}
recall {key}
remind me of my {key}
look up {key}
tell me my {key}
what did I save as {key}?
get {key}
Do you remember my {key}?
what was my {key} again?
what is {key}?
fetch {key}
I forgot my {key}, what is it?
can you recall my {key}?
read back {key}
what value is stored for {key}?
kv get {key}
""")

GET_ANSWER = _lines("""
Your {key} is {value}.
{key}: {value}.
It's {value}.
You saved {value} as {key}.
Your {key} is {value}
The stored {key} is {value}.
{value}
I have {value} for {key}.
""")

GET_MISSING_ANSWER = _lines("""
I don't have anything stored under {key}.
Nothing is saved as {key} yet.
There is no {key} in memory.
Sorry, I have no record of {key}.
I couldn't find {key}; you haven't saved it.
""")

CLOCK_ASK = _lines("""
what time is it?
What time is it
what's the time?
tell me the time
current time please
what's the date today?
what day is it?
do you know the time?
what is the current date and time?
clock
time?
what's the date and time right now?
what time is it now?
check the clock
give me the current time
Hey, what's the time
when is it now?
date please
""")

CLOCK_ANSWER = _lines("""
It is {r}.
The current time is {r}.
It's {r}.
Right now it is {r}.
{r}
The clock says {r}.
Now: {r}.
It's currently {r}.
""")

REPEAT_ASK = _lines("""
say {t}
Say {t}
repeat after me: {t}
please repeat: {t}
echo {t}
repeat {t}
say exactly: {t}
can you say {t}
repeat this: {t}
Please say {t}
copy this: {t}
write back: {t}
just say {t}
""")


KEY_WORDS = _lines("""
locker code
wifi password
parking spot
dentist
favorite color
door code
flight number
meeting room
pin
project name
bike lock
lucky number
server ip
hotel room
gate number
seat
train
bus line
doctor
account id
order number
zip code
license plate
shoe size
birthday
anniversary
boss
cat's name
dog's name
best friend
gym time
alarm
password hint
backup code
ticket
table
room
color
city
street
floor
team
desk
phone
email
username
nickname
address
book
movie
song
recipe
plan
goal
todo
note
reminder
budget
salary
height
weight
deadline
appointment
car
key
code
secret
token
badge
tag
mood
coffee order
shopping item
bank
branch
version
release
port
host
cluster
""")

WORDS = _words("""
blue river stone apple green tiger cloud silver maple ocean north coffee paper window garden rocket
lemon violet forest winter summer candle harbor pepper marble falcon copper velvet meadow thunder
pixel orbit canyon breeze ember frost island jungle lantern mango nectar olive panda quartz raven
saddle tulip umber valley walnut yellow zebra anchor bridge castle dragon eagle fable glacier hollow
ivory jasper kettle lagoon mirror nickel oyster pebble quiet ribbon shadow timber unity vortex
willow red cat dog sun moon star fish tree road bird rain snow fire king queen gold iron salt milk
tea jazz rock pop one two big small fast slow happy lucky dark light old new hot cold sweet bright
""")

NAMES = _lines("""
Alice
Bob
Carla
Deepak
Elena
Farid
Grace
Hiro
Ines
Jonas
Kemal
Lena
Mateo
Nadia
Oscar
Priya
Quinn
Rosa
Sven
Tara
Umar
Vera
Wei
Ximena
Yusuf
Zoe
Dr. Patel
Ms. Kim
Mr. Okafor
Smith
Garcia
Nguyen
Müller
Rossi
""")

MONTHS = _words("""
January February March April May June July August September October November December
""")

# The broad profile's extra phrasings (lmos.train.corpus_broad): worded arithmetic as
# (what the user says, the expression in the call), and more ways to store and recall.
CALC_WORDED = [
    ("multiply {a} by {b}", "{a} * {b}"),
    ("what is {a} multiplied by {b}?", "{a} * {b}"),
    ("add {a} and {b}", "{a} + {b}"),
    ("what is the sum of {a} and {b}?", "{a} + {b}"),
    ("subtract {b} from {a}", "{a} - {b}"),
    ("take {b} away from {a}", "{a} - {b}"),
    ("divide {a} by {b}", "{a} / {b}"),
    ("what is {a} divided by {b}?", "{a} / {b}"),
    ("what is {a} to the power of {b}?", "{a} ** {b}"),
    ("{a} squared?", "{a} ** 2"),
    ("what is {a} squared", "{a} ** 2"),
    ("what's the remainder of {a} divided by {b}?", "{a} % {b}"),
]
SET_MORE = [
    "the {key} is {value}, remember that",
    "{key} is {value}. please remember",
    "remember: {key} = {value}",
    "store {key} as {value}",
    "save the {key}: {value}",
    "I want you to remember that {key} is {value}",
    "note: the {key} is {value}",
    "please save {value} for {key}",
]
GET_MORE = [
    "what is the {key}?",
    "what's the {key}",
    "remind me what {key} is",
    "tell me the {key}",
    "do you know the {key}?",
    "what did I tell you {key} was?",
    "show me {key}",
]


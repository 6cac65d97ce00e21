"""Small-talk intents of the synthetic corpus: (what users say, what the assistant replies).

These turns teach the model that not every message needs a tool: the reply
is plain text, and routing them to a tool counts as an error in evaluation.
"""

from __future__ import annotations


def _lines(block: str) -> list[str]:
    """One phrasing per line (surrounding blank lines dropped)."""
    return [line.strip() for line in block.strip("\n").splitlines() if line.strip()]


SMALL_TALK = {
    "greet": (
        _lines("""
hi
hello
Hello!
hey
hi there
good morning
good evening
Hey there!
yo
hello lmos
hiya
greetings
good afternoon
Hi!
"""),
        _lines("""
Hello! How can I help?
Hi! What can I do for you?
Hey! How can I help you today?
Hello there. What do you need?
"""),
    ),
    "how": (
        _lines("""
how are you?
how's it going?
how are you doing
are you ok?
how do you feel?
what's up?
how have you been?
"""),
        _lines("""
I'm doing well, thanks. How can I help?
All good here! What can I do for you?
Running smoothly. What do you need?
"""),
    ),
    "thanks": (
        _lines("""
thanks
thank you!
thanks a lot
great, thanks
thx
much appreciated
cheers
Thank you very much
perfect, thank you
"""),
        _lines("""
You're welcome!
Happy to help.
Anytime!
Glad I could help.
"""),
    ),
    "who": (
        _lines("""
who are you?
what are you?
what is your name?
tell me about yourself
are you a robot?
what is lmos?
introduce yourself
"""),
        _lines("""
I'm lmos, a helpful assistant with tools.
I am lmos, an assistant that can use tools.
My name is lmos. I can calculate, remember things and tell the time.
"""),
    ),
    "what": (
        _lines("""
what can you do?
help
what tools do you have?
how can you help me?
what are your skills?
list your abilities
"""),
        _lines("""
I can do arithmetic, remember and recall values, tell the time, and chat.
I can calculate, store and recall notes, and check the clock.
Ask me to calculate something, remember a value, recall it, or tell you the time.
"""),
    ),
    "bye": (
        _lines("""
bye
goodbye
see you later
good night
that's all
bye bye
see ya
"""),
        _lines("""
Goodbye!
See you later!
Bye! Have a good day.
Take care!
"""),
    ),
    "misc": (
        _lines("""
tell me a joke
I'm bored
nice weather today
do you like music?
what's your favorite color?
ok
cool
I love pizza
you are great
lol
that's interesting
sounds good
"""),
        _lines("""
I'm just an assistant, but I'm happy to chat.
Sounds nice!
Interesting! Anything I can help with?
I don't have preferences, but I can help with tasks.
Okay!
"""),
    ),
}

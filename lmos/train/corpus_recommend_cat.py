"""Catalogue vocabulary of the recommend task: per domain, title parts, tags and description templates.

Data only.  A domain's ``titles`` are templates over its ``words`` lists and
a coined name (``{Name}``); ``descriptions`` are templates over the same
lists; ``nouns`` is what a customer calls the thing ("book", "film").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Domain:
    name: str
    nouns: tuple[str, ...]
    tags: tuple[str, ...]
    titles: tuple[str, ...]
    descriptions: tuple[str, ...]
    words: dict[str, tuple[str, ...]]


def _w(text: str, sep: str = ",") -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(sep) if x.strip())


DOMAINS = [
    Domain(
        "books",
        _w("book, novel, read, story"),
        _w("mystery, thriller, science fiction, fantasy, romance, history, biography, poetry, humour, "
           "crime, young adult, classic, short stories, memoir, adventure, horror, philosophy, "
           "travel writing"),
        _w("The {Adj} {Noun}, {Noun} of {Name}, The Last {Noun}, A {Noun} in {Name}, {Name}'s {Noun}, "
           "Beyond the {Noun}, The {Noun} Keeper"),
        _w("A {adj} story about {subject}; A {adj} novel set in {setting}; "
           "Follows {subject} across {setting}; "
           "A {adj} tale of {subject}, told in short chapters; Award-winning story of {subject}", ";"),
        {
            "Adj": _w("Silent, Hidden, Broken, Golden, Winter, Burning, Lost, Quiet, Crimson, "
                      "Glass, Endless"),
            "Noun": _w("Garden, River, Lighthouse, Mirror, Orchard, Harbour, Clockmaker, Map, "
                       "Letter, Crown, Tide"),
            "adj": _w("gripping, heartwarming, funny, dark, gentle, fast-paced, moving, witty, "
                      "haunting, cosy"),
            "subject": _w("a detective in a small town, two sisters who run a bakery, a lost expedition, "
                          "a family secret, an unlikely friendship, a chess prodigy, a stolen painting, "
                          "a journey home, a young queen, a crew of space miners"),
            "setting": _w("1920s Paris, a mountain village, a floating city, wartime London, "
                          "a remote island, "
                          "the far future, a seaside town, ancient Rome"),
        },
    ),
    Domain(
        "films",
        _w("film, movie, something to watch, show"),
        _w("comedy, drama, horror, animated, documentary, family, action, romance, sci-fi, musical, "
           "thriller, war, western, period drama, feel-good, indie"),
        _w("{Name}, The {Adj} {Noun}, {Noun} Road, Return to {Name}, {Name} Nights, The {Noun} Job"),
        _w("A {adj} {genre} about {subject}; {subject_cap} in a {adj} {genre}; "
           "{adj_cap} {genre} with {feature}; {runtime}-minute {genre} about {subject}", ";"),
        {
            "Adj": _w("Long, Last, Wild, Little, Electric, Great, Second, Midnight"),
            "Noun": _w("Summer, Heist, Orbit, Kingdom, Signal, Parade, Frontier, Harvest"),
            "adj": _w("funny, tense, touching, visually stunning, slow-burning, uplifting, scary, clever"),
            "genre": _w("film, movie, comedy, drama, documentary, thriller"),
            "subject": _w("a robot who learns to paint, a family road trip, a bank heist gone wrong, "
                          "deep-sea explorers, a school choir, a haunted hotel, rival chefs, "
                          "a mission to Mars"),
            "feature": _w("an award-winning score, a star cast, stunning landscapes, hand-drawn animation, "
                          "real interviews, big car chases"),
            "runtime": _w("90, 95, 104, 118, 126, 142"),
        },
    ),
    Domain(
        "gadgets",
        _w("gadget, device, headphones, speaker, watch, camera, laptop, tablet"),
        _w("wireless, waterproof, budget, long battery, noise cancelling, lightweight, premium, compact, "
           "fast charging, bluetooth, 4K, gaming, fitness, smart home, rugged, foldable"),
        _w("{Name} {Model} {Kind}, {Name} {Kind} {Model}, {Name} {Kind}"),
        _w("{Kind_cap} with {feature} and a {hours}-hour battery; {adj_cap} {kind} with {feature}; "
           "{adj_cap} {kind}, {weight} grams, with {feature}; {Kind_cap} for {use}, with {feature}", ";"),
        {
            "Model": _w("X2, Air, Pro, Mini, S5, Max, Lite, One, 3, Neo"),
            "Kind": _w("Headphones, Speaker, Smartwatch, Camera, Earbuds, Tablet, E-reader, Laptop, Drone"),
            "feature": _w("active noise cancelling, a splash-proof case, a bright OLED screen, "
                          "GPS tracking, a 48 MP sensor, USB-C charging, voice control, a backlit keyboard"),
            "hours": _w("8, 12, 20, 30, 40, 60"),
            "adj": _w("light, sturdy, slim, affordable, powerful, pocket-sized"),
            "weight": _w("150, 220, 310, 480, 900, 1200"),
            "use": _w("runners, commuters, students, travellers, gamers, photographers, home offices"),
        },
    ),
    Domain(
        "recipes",
        _w("recipe, dish, dinner idea, meal, something to cook"),
        _w("vegan, vegetarian, gluten-free, quick, spicy, high-protein, dessert, dairy-free, low-carb, "
           "one-pot, kid-friendly, budget, comfort food, healthy, baking, breakfast"),
        _w("{Adj} {Ingredient} {Dish}, {Ingredient} and {Ingredient2} {Dish}, {Name}-Style {Dish}"),
        _w("Ready in {minutes} minutes: {ingredient} with {ingredient2}; {adj_cap} {dish} with {ingredient}; "
           "{ingredient_cap} {dish}, "
           "serves {serves}; One-pan {dish} with {ingredient} and {ingredient2}", ";"),
        {
            "Adj": _w("Smoky, Creamy, Crispy, Zesty, Roasted, Spiced, Honey, Garlic"),
            "Ingredient": _w("Lentil, Chickpea, Salmon, Mushroom, Pumpkin, Chicken, Tofu, Spinach, Lemon"),
            "Ingredient2": _w("Coconut, Ginger, Feta, Tomato, Basil, Almond, Chilli"),
            "Dish": _w("Curry, Stew, Tacos, Pasta, Soup, Salad, Risotto, Traybake, Pancakes, Bowl"),
            "ingredient": _w("lentils, chickpeas, salmon, mushrooms, pumpkin, chicken, tofu, spinach, rice"),
            "ingredient2": _w("coconut milk, ginger, feta, tomatoes, basil, almonds, sweet potato"),
            "dish": _w("curry, stew, tacos, pasta, soup, salad, risotto, traybake, noodles"),
            "adj": _w("creamy, crispy, light, hearty, fragrant, smoky, fresh"),
            "minutes": _w("15, 20, 25, 30, 45, 60"),
            "serves": _w("2, 4, 6"),
        },
    ),
    Domain(
        "courses",
        _w("course, class, workshop, way to learn"),
        _w("beginner, advanced, online, weekend, certificate, self-paced, live, intermediate, evening, "
           "hands-on, free, project-based"),
        _w("{Level} {Subject}, {Subject} for {Audience}, {Subject} Bootcamp, {Subject} in {weeks} Weeks"),
        _w("{weeks}-week course on {topic} for {audience}; Learn {topic} with {format}; "
           "{format_cap}, covering {topic}; Covers {topic}, {hours} hours in total", ";"),
        {
            "Level": _w("Intro to, Practical, Advanced, Essential, Modern"),
            "Subject": _w("Python, Spanish, Photography, Data Analysis, Watercolour, Public Speaking, "
                          "Guitar, Web Design, Accounting, Yoga"),
            "Audience": _w("Beginners, Managers, Kids, Busy People, Designers, Retirees"),
            "weeks": _w("2, 4, 6, 8, 10, 12"),
            "topic": _w("the basics of programming, everyday conversation, portrait lighting, spreadsheets, "
                        "colour mixing, stage confidence, chords and rhythm, responsive layouts, "
                        "bookkeeping"),
            "audience": _w("complete beginners, working professionals, teenagers, small business owners, "
                           "hobbyists, career changers"),
            "format": _w("weekly live sessions, short video lessons, small-group workshops, "
                         "graded projects, one-to-one mentoring"),
            "hours": _w("6, 10, 15, 24, 40"),
        },
    ),
    Domain(
        "trips",
        _w("trip, holiday, getaway, tour, vacation"),
        _w("hiking, beach, city break, family, budget, luxury, adventure, food, culture, wildlife, "
           "skiing, cycling, relaxing, romantic, road trip, sailing"),
        _w("{days}-Day {Activity} Trip to {Name}, {Name} {Activity} Tour, {Adj} {Name} Getaway"),
        _w("{days} days of {activity} with {feature}; Guided {activity} in {place}, with {feature}; "
           "{adj_cap} trip to {place}: {feature}; Stay in {stay} and enjoy {activity}", ";"),
        {
            "days": _w("3, 4, 5, 7, 10, 14"),
            "Activity": _w("Hiking, Island, Food, Cycling, Safari, Ski, Wine, Coastal"),
            "Adj": _w("Sunny, Quiet, Alpine, Historic, Tropical, Northern"),
            "activity": _w("mountain hiking, snorkelling, street food tours, cycling, wildlife spotting, "
                           "skiing, museum visits, sailing"),
            "feature": _w("a local guide, all meals included, hotel pickups, small groups, flights included, "
                          "a free cancellation policy, a cooking class"),
            "place": _w("the Alps, the Greek islands, Kyoto, Patagonia, the Scottish Highlands, Lisbon, "
                        "Costa Rica, Iceland"),
            "adj": _w("relaxing, adventurous, affordable, luxurious, family-friendly"),
            "stay": _w("a mountain lodge, beach huts, a boutique hotel, a farmhouse, eco cabins"),
        },
    ),
]

PROFILES = (
    "I like {t1} {nouns}",
    "looking for a {t1} {noun}",
    "Something {t1} and {t2}, please",
    "I want a {noun} that is {t1}",
    "{t1}, {t2}",
    "Customer who loves {t1} and {t2}",
    "any {t1} {noun} ideas? I also like {w1}",
    "my partner enjoys {t1} things and {w1}",
    "need a {noun} for someone into {t1}",
    "I'm into {w1} and {w2}, budget is tight",
    "Can you suggest a {noun}? I like {t1} and {w1}",
    "gift for a friend who likes {t1} {nouns}",
    "I prefer {t1}, nothing too {t3}",
    "recommend me a {noun} with {w1}",
    "Hi, I am looking for something {t1} with {w1}",
    "{t1} fan, want a new {noun}",
)

ANSWERS = (
    "I recommend {title} because it is {tag}.",
    "{title} is the best fit: {desc}",
    "Try {title} - it's {tag}.",
    "You'll like {title}: {desc}",
    "{title}, since you want something {tag}.",
    "My pick is {title}. {desc}",
    "Go for {title}: it's {tag} and matches what you asked for.",
    "I'd suggest {title}, a good pick if you want something {tag}.",
)

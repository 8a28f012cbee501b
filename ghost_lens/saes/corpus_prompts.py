"""Varied instruct prompts whose answers become the training text of a built-in SAE bundle.

An SAE should learn the activations the model has when it writes, so the training text is the model's own writing
(:mod:`ghost_lens.saes.builtin`): it answers these prompts by sampling. The prompts ask for stories, explanations,
lists, poems, letters, advice and answers to everyday questions, over topics from nature, science, daily life,
hobbies, work, feelings, food, sport, technology and the arts.

They deliberately stay away from what the world-facts benchmark asks (capitals, currencies, languages of countries,
chemical element symbols and numbers) and name no country, so the SAEs are never fitted on the evaluation
questions or their answers.

1. :data:`STANDALONE` — hand-written questions and requests;
2. :data:`TEMPLATES` x :data:`TOPICS` — each template filled with a topic;
3. :func:`corpus_prompts` — all standalone prompts plus a seeded sample of the template-topic pairs, shuffled.
"""

from __future__ import annotations

import random

STANDALONE: tuple[str, ...] = (
    "What is a good way to start the morning?",
    "How do bees make honey?",
    "Can you help me plan a birthday party for my little brother?",
    "Why is the sky blue during the day and orange at sunset?",
    "Tell me a bedtime story about a sleepy dragon.",
    "What should I pack for a weekend camping trip?",
    "How can I get better at remembering people's names?",
    "Write a short dialogue between a cat and a dog who share a house.",
    "What are some healthy snacks for studying late?",
    "Explain how a rainbow forms.",
    "Give me a simple recipe for pancakes.",
    "How do I stay calm before a job interview?",
    "What is the difference between weather and climate?",
    "Write a haiku about autumn leaves.",
    "How do airplanes stay in the air?",
    "Suggest a name for a small bakery and explain why.",
    "What are three ways to save water at home?",
    "Describe the feeling of finishing a long book.",
    "How does a seed grow into a plant?",
    "Write a thank-you note to a teacher.",
    "What makes a good friend?",
    "How do I fix a bicycle chain that keeps slipping?",
    "Explain what a computer program is, simply.",
    "Write a short mystery story that takes place in a library.",
    "Why do we need sleep?",
    "What games can a family play on a rainy afternoon?",
    "How can I make my small room feel bigger?",
    "Explain why the moon has phases.",
    "Write a motivational message for someone starting a new job.",
    "What are the main parts of a flower?",
    "How do I start learning to draw?",
    "Tell me a funny story about a robot learning to cook.",
    "What is the best way to learn a new skill quickly?",
    "Why do leaves change color in the fall?",
    "How do you make a paper airplane that flies far?",
    "Write a short speech for a friend's wedding.",
    "How does the heart pump blood around the body?",
    "What are some ways to be kind to strangers?",
    "Explain what gravity is.",
    "Describe a busy market on a Saturday morning.",
    "How can I keep houseplants alive?",
    "Write a story about a lighthouse keeper and a storm.",
    "What is the difference between a virus and a bacterium?",
    "Give me ideas for a school science fair project.",
    "Why do cats purr?",
    "How should I organize my week to get more done?",
    "Write a poem about the first snow of winter.",
    "How do volcanoes erupt?",
    "What is a budget and how do I make one?",
    "Tell me about the life of a honeybee colony.",
    "How can I become a better listener?",
    "Write a short adventure story about two kids who find a secret map.",
    "Why is exercise good for the brain?",
    "What are clouds made of?",
    "How do I write a good opening sentence for an essay?",
    "Describe the sounds of a forest at night.",
    "How do magnets work?",
    "Write a review of an imaginary restaurant that serves only soup.",
    "What should I do if I feel lonely?",
    "How do whales communicate?",
    "Explain how a bicycle's gears help you ride up hills.",
    "Write a letter from a grandparent to a grandchild who just started school.",
    "What are some fun facts about octopuses?",
    "How is bread made, step by step?",
    "Why do we have seasons?",
    "Give me tips for taking better photos with a phone.",
    "Write a story about a lost umbrella that travels around a city.",
    "How do I politely say no to extra work?",
    "What happens to our body when we run?",
    "Explain what recycling is and why it matters.",
)

TEMPLATES: tuple[str, ...] = (
    "Write a short story about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "List five interesting things about {topic}.",
    "What are the pros and cons of {topic}?",
    "Write a short poem about {topic}.",
    "Give me three practical tips about {topic}.",
    "Describe {topic} in a few sentences.",
    "Why do people find {topic} interesting?",
    "Write a diary entry by someone who spent the day with {topic}.",
    "What would a curious student ask about {topic}? Answer two of those questions.",
    "Write a friendly letter to a friend about {topic}.",
    "What are common mistakes beginners make with {topic}?",
    "Tell me a funny anecdote involving {topic}.",
    "Compare {topic} with something from everyday life.",
)

TOPICS: tuple[str, ...] = (
    "the water cycle", "a rainy day at the beach", "learning to play the guitar", "owls", "baking bread",
    "a school trip to a museum", "the human brain", "electric cars", "gardening", "a thunderstorm",
    "running a marathon", "friendship", "a lost kitten", "the night sky", "coral reefs", "recycling",
    "a first day at a new job", "chess", "photosynthesis", "a busy train station", "dinosaurs", "honeybees",
    "making pizza at home", "the ocean tides", "video games", "a mountain hike", "rainforests", "sleep",
    "a robot that wants to paint", "volcanoes", "saving money", "learning to swim", "the immune system",
    "a winter morning", "public libraries", "wind turbines", "kindness", "a talking tree", "football practice",
    "the moon", "clouds", "writing a novel", "a farmers' market", "elephants", "solar panels",
    "moving to a new house", "jazz music", "origami", "the internet", "a birthday surprise", "deserts",
    "drinking enough water", "a picnic in the park", "bicycles", "the color blue", "penguins", "earthquakes",
    "a small village festival", "teamwork", "computers", "spiders", "a haunted old house", "meditation",
    "the stars and constellations", "a lighthouse", "knitting", "tea", "a camping trip", "rivers",
    "dreams", "a science experiment that went wrong", "bridges", "a young inventor", "butterflies",
    "learning a new language", "a snowy forest", "healthy breakfasts", "the first airplane flight",
    "a dog who loves the mail carrier", "mathematics puzzles", "a thunder-shy horse", "board games",
    "the stock of a small bookshop", "a trip to the dentist", "autumn", "a pirate ship", "bread mold",
    "sunflowers", "a quiet Sunday", "telescopes", "homework", "a city at midnight", "spring cleaning",
)


def corpus_prompts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct prompts: every standalone prompt (or a sample of them when ``n`` is smaller), topped up with
    a seeded sample of template-topic pairs; shuffled with ``seed``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = random.Random(seed)
    standalone = list(STANDALONE)
    rng.shuffle(standalone)
    chosen = standalone[:n]
    pairs = [(t, topic) for t in TEMPLATES for topic in TOPICS]
    rng.shuffle(pairs)
    need = n - len(chosen)
    if need > len(pairs):
        raise ValueError(f"at most {len(STANDALONE) + len(pairs)} prompts are available, asked for {n}")
    chosen += [t.format(topic=topic) for t, topic in pairs[:need]]
    rng.shuffle(chosen)
    return chosen

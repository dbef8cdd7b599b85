"""Pets and Pets-OOD: two synthetic users who disagree about which pet a response should talk about.

One prompt (``PETS_PROMPT``). Each response is one sentence about one animal, composed from an animal fact and a
frame: the train and test pools use disjoint facts *and* disjoint frames, so no test sentence (nor its content)
appears in training. The four animals carry two properties (VPL's construction):

====== ======= ========
animal helpful harmless
====== ======= ========
bird   yes     yes
dog    yes     no
cat    no      yes
rabbit no      no
====== ======= ========

The ``helpful`` user's utility is ``2 * helpful + harmless`` and the ``harmless`` user's ``helpful + 2 * harmless``
(the profile in ``ground_truth``), so the orders are bird > dog > cat > rabbit and bird > cat > dog > rabbit:
the pairs bird/dog, cat/rabbit, bird/cat, dog/rabbit and bird/rabbit are *agreed*, dog/cat is *contested*. Half
the train and eval pairs are contested (``contested_share``), half agreed, uniformly over the five agreed kinds.

Context: ``num_context_pairs`` (3) labelled pairs of the same user, disjoint from the record's own pairs, with at
least ``min_contested_context`` contested ones so that the context identifies the user (with three pairs drawn at
the reference's 50% share, one context in eight would carry no information about the user).

Pets-OOD (``ood=True``) adds a ``test_ood`` split in which the properties move: rabbits become helpful but harmful
and birds harmless but unhelpful, dogs take the birds' old role (both) and cats the rabbits' (neither). The same
two kinds of user (the same utilities over the properties) now disagree on *rabbit vs bird*, and their context
pairs show it (at least one contested rabbit/bird pair). A summarizer that memorised "the dog person" / "the cat
person" carries no information about rabbits vs birds; one that reports what the context shows ("prefers the
rabbit over the bird") does. The user ids in ``test_ood`` are ``helpful-ood`` and ``harmless-ood``; their profile
holds the new utilities per animal, so every label still follows from ``ground_truth``. Agreed OOD pairs follow
the new table too (e.g. dog > bird), so the split also tests that the reward model reads the summary rather than
a memorised global order.
"""

from __future__ import annotations

import random
from itertools import combinations

from plus.data.schema import majority_credit, make_record

PETS_PROMPT = "Tell me about one kind of pet, in one sentence."
ANIMALS: tuple[str, ...] = ("bird", "dog", "cat", "rabbit")
PROPERTIES: dict[str, dict[str, int]] = {
    "bird": {"helpful": 1, "harmless": 1},
    "dog": {"helpful": 1, "harmless": 0},
    "cat": {"helpful": 0, "harmless": 1},
    "rabbit": {"helpful": 0, "harmless": 0},
}
OOD_PROPERTIES: dict[str, dict[str, int]] = {
    "dog": {"helpful": 1, "harmless": 1},
    "rabbit": {"helpful": 1, "harmless": 0},
    "bird": {"helpful": 0, "harmless": 1},
    "cat": {"helpful": 0, "harmless": 0},
}
# The default first words of a one-fact summary (notebook 04 prefills the same words).
SUMMARY_PREFIX = "This user prefers responses about"
USER_WEIGHTS: dict[str, dict[str, int]] = {
    "helpful": {"helpful": 2, "harmless": 1},
    "harmless": {"helpful": 1, "harmless": 2},
}

# Facts: 18 for training, the last 6 for testing. Each names its animal.
FACTS: dict[str, list[str]] = {
    "bird": [
        "a parrot can learn to repeat dozens of words",
        "canaries fill a quiet home with cheerful song",
        "a budgie is happiest with a companion bird nearby",
        "pet birds need a cage wide enough to stretch their wings",
        "cockatiels love to whistle along with familiar tunes",
        "birds enjoy a daily bath in a shallow dish of water",
        "a finch is a calm bird that suits a small apartment",
        "parrots need chew toys to keep their beaks healthy",
        "lovebirds form strong bonds with the people who care for them",
        "a pet bird benefits from fresh fruit and seeds every day",
        "many birds can be trained to step onto your finger",
        "a covered cage at night helps a bird sleep soundly",
        "birds are sensitive to kitchen fumes, so keep them away from the stove",
        "an African grey parrot is famous for its intelligence",
        "a bird's cage should be cleaned at least once a week",
        "pet birds like to have several perches of different widths",
        "budgies come in bright shades of green, blue and yellow",
        "birds often sing most in the early morning light",
        # test
        "a cockatoo may live for more than forty years",
        "parakeets can be taught simple tricks with millet treats",
        "birds enjoy mirrors and bells hung inside their cage",
        "a dove's soft cooing is soothing to many owners",
        "a healthy bird keeps its feathers neat by preening",
        "birds need a few hours outside the cage to fly safely indoors",
    ],
    "dog": [
        "dogs need a long walk every single day",
        "a dog will greet you at the door every time you come home",
        "puppies learn house rules fastest with short, regular training",
        "a dog needs fresh water available at all times",
        "retrievers love to play fetch for hours",
        "dogs read human faces and tone of voice remarkably well",
        "a well-trained dog can learn commands like sit, stay and heel",
        "dogs should visit the vet once a year for vaccinations",
        "a tired dog is usually a well-behaved dog",
        "herding dogs need a job or a puzzle to stay content",
        "a dog's nose is tens of thousands of times more sensitive than ours",
        "small dogs often live longer than large breeds",
        "dogs enjoy sniffing new places on their walks",
        "a dog crate can become a safe den for a nervous puppy",
        "many dogs love to swim in lakes and rivers",
        "a dog's coat needs regular brushing to stay healthy",
        "dogs are pack animals and dislike being left alone all day",
        "a beagle follows its nose wherever a scent leads",
        # test
        "dogs wag their tails in different ways depending on their mood",
        "a greyhound sprints fast but spends most of the day napping",
        "a dog can be taught to fetch the newspaper",
        "dogs need their nails trimmed every few weeks",
        "guide dogs help people who are blind move around safely",
        "a puppy chews on everything while its teeth come in",
    ],
    "cat": [
        "cats spend up to sixteen hours a day asleep",
        "a cat keeps itself clean by grooming for hours",
        "cats like a tall scratching post to sharpen their claws",
        "a cat will often choose a cardboard box over an expensive bed",
        "kittens learn to use a litter box almost on their own",
        "cats purr when they feel content and relaxed",
        "a cat likes to watch birds through the window",
        "cats are happy to be left alone while you are at work",
        "a cat's whiskers help it judge narrow spaces",
        "cats prefer fresh water from a fountain to a still bowl",
        "a cat kneads soft blankets with its paws when it is happy",
        "indoor cats enjoy toys that look like feathers or mice",
        "cats land on their feet thanks to a flexible spine",
        "a Maine Coon is one of the largest domestic cat breeds",
        "cats show affection by slowly blinking at you",
        "a cat's litter box should be scooped every day",
        "cats love warm sunny spots on the floor",
        "a Siamese cat is known for being very talkative",
        # test
        "cats can jump up to six times their own length",
        "a cat rubs its cheeks on furniture to mark it as home",
        "cats hunt small toys most eagerly at dawn and dusk",
        "a Persian cat needs its long coat combed daily",
        "cats drink little water, so wet food helps keep them hydrated",
        "a cat tree gives an indoor cat space to climb",
    ],
    "rabbit": [
        "rabbits need plenty of hay to keep their teeth worn down",
        "a rabbit binkies, leaping into the air, when it is happy",
        "rabbits can be trained to use a litter box",
        "a rabbit needs space to hop around every day",
        "rabbits are social and do best in bonded pairs",
        "a rabbit's teeth never stop growing",
        "rabbits love fresh leafy greens such as romaine and parsley",
        "a lop-eared rabbit has ears that hang down beside its face",
        "rabbits thump their back feet to warn of danger",
        "a rabbit should never be picked up by its ears",
        "rabbits are most active in the early morning and evening",
        "a rabbit will chew electrical cables, so hide them away",
        "rabbits groom each other as a sign of trust",
        "a Netherland Dwarf is one of the smallest rabbit breeds",
        "rabbits need a quiet hiding place to feel safe",
        "a rabbit's diet should be mostly hay with a few pellets",
        "rabbits can live ten years or more with good care",
        "a rabbit enjoys tunnels and cardboard castles to explore",
        # test
        "rabbits have nearly all-round vision to spot predators",
        "a rabbit purrs by softly grinding its teeth when content",
        "rabbits dislike being held high off the ground",
        "a rabbit's fur should be brushed more often while it sheds",
        "rabbits can learn their names and come when called",
        "a rabbit marks its territory by rubbing its chin on things",
    ],
}
NUM_TRAIN_FACTS = 18
# Frames: 8 for training, the last 4 for testing.
FRAMES: list[str] = [
    "{Fact}.",
    "Here is something worth knowing: {fact}.",
    "Did you know that {fact}?",
    "One thing owners learn quickly is that {fact}.",
    "If you are choosing a pet, remember that {fact}.",
    "A fun fact: {fact}!",
    "People are often surprised that {fact}.",
    "From my experience, {fact}.",
    # test
    "It is good to keep in mind that {fact}.",
    "Pet experts agree that {fact}.",
    "Here is a quick tip: {fact}.",
    "Something many people do not realise is that {fact}.",
]
NUM_TRAIN_FRAMES = 8


def pet_sentences(animal: str, pool: str) -> list[str]:
    """The response pool of ``animal`` for ``pool`` (``train`` or ``test``): every fact x frame of that pool."""
    if animal not in FACTS:
        raise ValueError(f"Unknown animal {animal!r}; choose one of {ANIMALS}")
    if pool not in ("train", "test"):
        raise ValueError(f"pool must be 'train' or 'test', got {pool!r}")
    facts = FACTS[animal][:NUM_TRAIN_FACTS] if pool == "train" else FACTS[animal][NUM_TRAIN_FACTS:]
    frames = FRAMES[:NUM_TRAIN_FRAMES] if pool == "train" else FRAMES[NUM_TRAIN_FRAMES:]
    out = []
    for frame in frames:
        for fact in facts:
            out.append(frame.format(fact=fact, Fact=fact[0].upper() + fact[1:]))
    return out


def pet_utility(profile: dict[str, int], animal: str) -> int:
    """A user's utility for a response about ``animal``; ``profile`` maps each animal to its utility."""
    return profile[animal]


def _profile(user: str, table: dict[str, dict[str, int]]) -> dict[str, int]:
    weights = USER_WEIGHTS[user]
    return {a: sum(weights[p] * table[a][p] for p in weights) for a in ANIMALS}


def _description(user: str, profile: dict[str, int]) -> str:
    order = " > ".join(sorted(ANIMALS, key=lambda a: -profile[a]))
    other = "harmless" if user == "helpful" else "helpful"
    return (
        f"Prefers {user} responses first and {other} ones second; over pets this means {order} "
        f"(utilities {', '.join(f'{a}={profile[a]}' for a in ANIMALS)})."
    )


def _pair_kinds(profiles: dict[str, dict[str, int]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Animal pairs the users agree on and pairs they disagree on."""
    agreed, contested = [], []
    for a, b in combinations(ANIMALS, 2):
        signs = {(p[a] > p[b]) - (p[a] < p[b]) for p in profiles.values()}
        (contested if len(signs) > 1 else agreed).append((a, b))
    return agreed, contested


def build_pets(
    seed: int = 0,
    num_train: int = 1024,
    num_test: int = 200,
    ood: bool = False,
    contested_share: float = 0.5,
    num_context_pairs: int = 3,
    min_contested_context: int = 1,
) -> list[dict]:
    """Pets records (``dataset`` = ``pets``, or ``pets-ood`` with a ``test_ood`` split when ``ood``).

    ``num_train`` records in ``train`` and ``num_test`` in each test split, split evenly over the two users.
    Train records use the train sentence pools, test records the disjoint test pools. Deterministic in ``seed``.
    """
    if not 0.0 <= contested_share <= 1.0:
        raise ValueError(f"contested_share must be in [0, 1], got {contested_share}")
    if not 0 <= min_contested_context <= num_context_pairs:
        raise ValueError(f"min_contested_context must be in [0, {num_context_pairs}], got {min_contested_context}")
    if num_train < 0 or num_test < 0:
        raise ValueError(f"sizes must be non-negative, got num_train={num_train}, num_test={num_test}")
    rng = random.Random(f"pets-{seed}")
    pools = {pool: {a: pet_sentences(a, pool) for a in ANIMALS} for pool in ("train", "test")}
    dataset = "pets-ood" if ood else "pets"
    plans = [("train", "train", PROPERTIES, "", num_train), ("test", "test", PROPERTIES, "", num_test)]
    if ood:
        plans.append(("test_ood", "test", OOD_PROPERTIES, "-ood", num_test))
    population = {user: _profile(user, PROPERTIES) for user in USER_WEIGHTS}  # the training users
    records = []
    for split, pool, table, suffix, size in plans:
        profiles = {user: _profile(user, table) for user in USER_WEIGHTS}
        agreed, contested = _pair_kinds(profiles)
        users = list(USER_WEIGHTS)
        for i in range(size):
            user = users[i % len(users)]
            profile = profiles[user]

            def draw(is_contested: bool, profile=profile, agreed=agreed, contested=contested, pool=pool) -> dict:
                a, b = rng.choice(contested if is_contested else agreed)
                ya, yb = rng.choice(pools[pool][a]), rng.choice(pools[pool][b])
                if profile[a] < profile[b]:
                    ya, yb = yb, ya
                return {"prompt": PETS_PROMPT, "chosen": ya, "rejected": yb}

            train_contested = rng.random() < contested_share
            eval_contested = rng.random() < contested_share
            train_pair, eval_pair = draw(train_contested), draw(eval_contested)
            contested_flags = [
                j < min_contested_context or rng.random() < contested_share for j in range(num_context_pairs)
            ]
            rng.shuffle(contested_flags)
            context, seen = (
                [],
                {train_pair["chosen"], eval_pair["chosen"], train_pair["rejected"], eval_pair["rejected"]},
            )
            for flag in contested_flags:
                pair = draw(flag)
                while pair["chosen"] in seen or pair["rejected"] in seen:  # the context never repeats a target
                    pair = draw(flag)
                seen.update((pair["chosen"], pair["rejected"]))
                context.append(pair)
            records.append(
                make_record(
                    dataset=dataset,
                    split=split,
                    user_id=user + suffix,
                    context_pairs=context,
                    context_flips=[rng.random() < 0.5 for _ in context],
                    train=train_pair,
                    eval=eval_pair,
                    ground_truth={"profile": dict(profile), "description": _description(user, profile)},
                    contested=eval_contested,
                    train_contested=train_contested,
                    majority_credit=majority_credit(
                        (p[animal_of(eval_pair["chosen"])], p[animal_of(eval_pair["rejected"])])
                        for p in population.values()
                    ),
                )
            )
    return records


def animal_of(sentence: str) -> str:
    """The animal a Pets response talks about (every sentence in the pools names exactly one fact's animal)."""
    for animal, facts in FACTS.items():
        if any(fact.lower() in sentence.lower() for fact in facts):
            return animal
    raise ValueError(f"Not a Pets response: {sentence!r}")


def record_profile(record: dict) -> dict[str, int]:
    """A Pets record's user utilities (``ground_truth["profile"]``), with an error naming the record when it has
    none (a record of another data set)."""
    profile = (record.get("ground_truth") or {}).get("profile")
    if not profile:
        raise ValueError(f"record {record.get('user_id')!r} has no ground_truth.profile: a Pets record is needed")
    return profile


def contested_animals(profile: dict[str, int]) -> tuple[str, str]:
    """``(own, other)``: the animals a Pets user ranks second and third. The two users of a split agree on the
    first and the last, so these are the animals of the user's contested pair, and the user prefers ``own``
    (train and test: dog or cat; ``test_ood``: rabbit or bird)."""
    ranked = sorted(ANIMALS, key=lambda animal: -profile[animal])
    return ranked[1], ranked[2]


def animal_summary(animal: str, prefix: str = SUMMARY_PREFIX) -> str:
    """A one-fact summary in a summarizer's words: ``"<prefix> dogs."`` for ``animal="dog"``."""
    if animal not in ANIMALS:
        raise ValueError(f"Unknown Pets animal {animal!r}; expected one of {ANIMALS}")
    return f"{prefix} {animal}s."


def ideal_summary(profile: dict[str, int], prefix: str = SUMMARY_PREFIX) -> str:
    """The one fact a Pets summary needs: `animal_summary` of the user's own contested animal (dogs for the
    helpful user)."""
    return animal_summary(contested_animals(profile)[0], prefix)


def animal_named_first(summary: str, profile: dict[str, int]) -> str:
    """``own``, ``other`` or ``neither``: which animal of the user's contested pair a summary names first."""
    text = summary.lower()
    own, other = contested_animals(profile)
    positions = {label: text.find(animal) for label, animal in (("own", own), ("other", other)) if animal in text}
    return min(positions, key=positions.get) if positions else "neither"

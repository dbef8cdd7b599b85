"""Prompts and plain content for the synthetic attribute users: a question and three neutral sentences that answer
it. `plus.data.attributes` dresses the content in style (length, register, humour, ...)."""

from __future__ import annotations

TOPICS: list[tuple[str, list[str]]] = [
    (
        "How do I keep a houseplant alive?",
        [
            "Water it only when the top layer of soil is dry.",
            "Place it where it gets the kind of light its species needs.",
            "Repot it every year or two so the roots do not run out of space.",
        ],
    ),
    (
        "Why is the sky blue?",
        [
            "Sunlight is scattered by the molecules in the air.",
            "Blue light is scattered much more than red light because its wavelength is shorter.",
            "When you look away from the sun, you are seeing that scattered blue light.",
        ],
    ),
    (
        "How can I sleep better?",
        [
            "Go to bed and wake up at the same time every day.",
            "Keep your bedroom dark, quiet and cool.",
            "Avoid caffeine in the afternoon and screens in the last hour before bed.",
        ],
    ),
    (
        "What is compound interest?",
        [
            "Compound interest is interest earned on both the original sum and the interest already added.",
            "Because the base keeps growing, savings grow faster over time than with simple interest.",
            "It is the reason why starting to save early makes such a large difference.",
        ],
    ),
    (
        "How do I make a good cup of tea?",
        [
            "Use freshly boiled water, slightly cooler for green tea.",
            "Steep black tea for three to five minutes and green tea for about two.",
            "Remove the leaves afterwards so the tea does not turn bitter.",
        ],
    ),
    (
        "How should I prepare for a job interview?",
        [
            "Research the company and the role before the day.",
            "Prepare short stories that show how you solved real problems.",
            "Have a few questions of your own ready for the interviewer.",
        ],
    ),
    (
        "What causes the seasons?",
        [
            "The seasons come from the tilt of the Earth's axis.",
            "As the Earth orbits the sun, each hemisphere leans towards the sun for part of the year.",
            "More direct sunlight and longer days make that part of the year summer.",
        ],
    ),
    (
        "How do I start running?",
        [
            "Begin with short intervals of running and walking.",
            "Increase your total distance by no more than about ten percent a week.",
            "Get comfortable shoes and rest on the days between runs.",
        ],
    ),
    (
        "What is a black hole?",
        [
            "A black hole is a region where gravity is so strong that not even light can escape.",
            "Many form when very massive stars collapse at the end of their lives.",
            "Its boundary is called the event horizon.",
        ],
    ),
    (
        "How can I learn a new language faster?",
        [
            "Practise a little every day instead of a lot once a week.",
            "Speak with native speakers as early as you can.",
            "Learn the most common words first, since they cover most everyday conversation.",
        ],
    ),
    (
        "How do vaccines work?",
        [
            "A vaccine shows the immune system a harmless piece or version of a germ.",
            "The body makes antibodies and memory cells against it.",
            "If the real germ arrives later, the immune system recognises it and responds quickly.",
        ],
    ),
    (
        "How do I write a good cover letter?",
        [
            "Address it to a specific person if you can find the name.",
            "Explain why you want this particular job and what you bring to it.",
            "Keep it to one page and proofread it carefully.",
        ],
    ),
    (
        "What is photosynthesis?",
        [
            "Photosynthesis is how plants turn light into chemical energy.",
            "They use carbon dioxide and water to make sugar.",
            "Oxygen is released as a by-product.",
        ],
    ),
    (
        "How can I save money on groceries?",
        [
            "Plan your meals for the week and shop with a list.",
            "Buy staples in bulk and compare prices per unit.",
            "Cook at home more often and use up leftovers.",
        ],
    ),
    (
        "Why do we dream?",
        [
            "Scientists do not fully agree on why we dream.",
            "One idea is that dreams help the brain sort and store memories.",
            "Another is that they let us rehearse emotional situations safely.",
        ],
    ),
    (
        "How do I remove a coffee stain?",
        [
            "Blot the stain at once with cold water.",
            "Rub in a little liquid detergent and let it sit for a few minutes.",
            "Wash the fabric as usual and check the stain is gone before drying it.",
        ],
    ),
    (
        "What is inflation?",
        [
            "Inflation is the general rise in prices over time.",
            "It means that the same amount of money buys less than before.",
            "Central banks usually try to keep it low and stable.",
        ],
    ),
    (
        "How do I choose a good password?",
        [
            "Use a long passphrase made of several unrelated words.",
            "Never reuse the same password on different sites.",
            "A password manager can remember them for you.",
        ],
    ),
    (
        "How do airplanes stay in the air?",
        [
            "The shape and angle of the wings push air downwards.",
            "By pushing air down, the wings get an upward force called lift.",
            "The engines provide the forward speed that keeps air flowing over the wings.",
        ],
    ),
    (
        "How can I be more productive at work?",
        [
            "Start the day with your most important task.",
            "Work in focused blocks and turn off notifications while you do.",
            "Take short breaks so your attention does not fade.",
        ],
    ),
    (
        "What is the difference between weather and climate?",
        [
            "Weather is what the atmosphere does over hours and days.",
            "Climate is the average pattern of weather over decades.",
            "A cold week does not change the climate, but a warming trend over years does.",
        ],
    ),
    (
        "How do I bake bread at home?",
        [
            "Mix flour, water, salt and yeast into a dough and knead it until it is smooth.",
            "Let it rise until it has roughly doubled in size.",
            "Shape it and bake it in a hot oven until the crust is deep brown.",
        ],
    ),
    (
        "How does the internet work?",
        [
            "Computers send data to each other in small packets.",
            "Routers pass each packet along a path towards its destination.",
            "Shared protocols make sure the packets arrive and are put back together in order.",
        ],
    ),
    (
        "How can I reduce stress?",
        [
            "Regular exercise is one of the most reliable ways to lower stress.",
            "Slow breathing for a few minutes calms the body quickly.",
            "Talking to someone you trust helps you put problems in perspective.",
        ],
    ),
    (
        "What is a healthy breakfast?",
        [
            "A healthy breakfast combines protein, fibre and some fruit.",
            "Oats with yoghurt and berries or eggs on wholegrain toast are good examples.",
            "Sugary cereals tend to leave you hungry again quickly.",
        ],
    ),
    (
        "How do tides work?",
        [
            "Tides are caused mostly by the pull of the moon's gravity on the oceans.",
            "The water bulges on the side facing the moon and on the opposite side.",
            "As the Earth turns, most coasts pass through two high tides a day.",
        ],
    ),
    (
        "How do I give a good presentation?",
        [
            "Know the main message you want the audience to remember.",
            "Use few words on your slides and speak to the people in the room.",
            "Rehearse out loud at least twice before the day.",
        ],
    ),
    (
        "What is machine learning?",
        [
            "Machine learning is a way of building programs that learn patterns from data.",
            "Instead of writing rules by hand, you show the program many examples.",
            "It is used in spam filters, translation and recommendations.",
        ],
    ),
    (
        "How do I care for a cast iron pan?",
        [
            "Wash it with hot water and a brush, and avoid soaking it.",
            "Dry it completely on the stove so it does not rust.",
            "Rub in a thin layer of oil after each use.",
        ],
    ),
    (
        "Why do leaves change colour in autumn?",
        [
            "In autumn, trees stop making the green pigment chlorophyll.",
            "As the green fades, yellow and orange pigments that were there all along become visible.",
            "Some trees also make new red pigments in their leaves.",
        ],
    ),
    (
        "How can I improve my handwriting?",
        [
            "Hold the pen loosely and write slowly at first.",
            "Practise the basic letter shapes for a few minutes each day.",
            "Keep the spacing and slant of your letters consistent.",
        ],
    ),
    (
        "What is a budget and why should I have one?",
        [
            "A budget is a plan for how you will spend and save your income.",
            "It shows where your money actually goes each month.",
            "With a budget, you are far less likely to run short before payday.",
        ],
    ),
    (
        "How do I keep my laptop running fast?",
        [
            "Uninstall programs you no longer use.",
            "Limit the number of applications that start when the computer boots.",
            "Keep the operating system updated and leave some disk space free.",
        ],
    ),
    (
        "How do bees make honey?",
        [
            "Bees collect nectar from flowers and carry it back to the hive.",
            "In the hive, they pass it between them and store it in wax cells.",
            "They fan it with their wings until enough water evaporates to turn it into honey.",
        ],
    ),
    (
        "How do I make friends in a new city?",
        [
            "Join a club or class built around something you enjoy.",
            "Say yes to invitations, even when you feel tired.",
            "Suggest a second meeting to people you get along with.",
        ],
    ),
    (
        "What is the greenhouse effect?",
        [
            "The greenhouse effect is the warming of the Earth by gases that trap heat.",
            "Sunlight warms the ground, which gives off heat that these gases absorb.",
            "Adding more of them, such as carbon dioxide, makes the planet warmer.",
        ],
    ),
    (
        "How do I teach a child to ride a bike?",
        [
            "Start on a balance bike or with the pedals removed.",
            "Let the child glide on a gentle slope until balancing feels natural.",
            "Add the pedals back and hold the saddle only until they find their rhythm.",
        ],
    ),
    (
        "How do I study for an exam?",
        [
            "Spread your revision over several days instead of cramming.",
            "Test yourself with past questions instead of only rereading notes.",
            "Sleep well the night before, since sleep helps memory.",
        ],
    ),
    (
        "Why does ice float on water?",
        [
            "Ice is less dense than liquid water.",
            "When water freezes, its molecules lock into an open crystal pattern.",
            "That pattern takes up more space, so the ice floats.",
        ],
    ),
    (
        "How can I drink more water during the day?",
        [
            "Keep a refillable bottle with you.",
            "Drink a glass with every meal.",
            "Add a slice of lemon or cucumber if plain water bores you.",
        ],
    ),
]

"""A fixed retrieval test set: three realistic multi-page documents (a tenant handbook, an appliance manual, a
travel policy) with distinct facts on each page, and questions whose answer page is known.

Used by rag/tests/test_retrieval_quality.py (a regression fails CI) and bench/rag_quality.py (recall@1 and
recall@6 per embedder option, reported in bench/README.md). Every page also carries paragraphs of the document's
general prose, drawn from a per-document pool with a fixed seed, so the facts compete with on-topic text that
shares their vocabulary, the way a real manual's boilerplate does.

Questions are of two kinds: "words" share their key words with the answer's text (BM25 can find them), and
"meaning" questions are paraphrases that share (almost) none, which only an embedding connects.
"""

import random
from dataclasses import dataclass

from testsupport.files import make_text_pdf


@dataclass(frozen=True)
class Question:
    document: str  # file name
    page: int  # 1-based page holding the answer
    text: str
    kind: str  # "words" or "meaning"


HANDBOOK = "tenant-handbook.pdf"
MANUAL = "espresso-manual.pdf"
POLICY = "travel-policy.pdf"

_HANDBOOK_PAGES = [
    (
        "Welcome to Harbor View Apartments",
        [
            "This handbook explains how life in the building works, from the first day to the day you move out. "
            "Keep it somewhere you can find it; the management office updates it every January.",
            "The management office is on the ground floor next to the mailboxes. It is open Monday to Friday "
            "from 9:00 to 17:30 and on Saturday mornings from 10:00 to 13:00.",
            "Your building manager is Teresa Lindqvist. For anything that cannot wait until the office opens, the "
            "after-hours line is 555-0142.",
        ],
    ),
    (
        "Rent and payments",
        [
            "Rent is due on the first day of each month. Payments received after the fifth day of the month carry a "
            "late fee of 45 dollars, added to the next statement.",
            "The preferred way to pay is the online tenant portal, which accepts bank transfers without a fee. Card "
            "payments through the portal carry a processing charge of 2.5 percent.",
            "Cheques can be dropped in the locked box inside the office door; write your unit number on the back.",
        ],
    ),
    (
        "Utilities and internet",
        [
            "Water and heating are included in your rent. Electricity is billed separately by the city utility; "
            "open an account in your own name before you move in so the power is not cut.",
            "Every unit is wired for fibre. The building's shared network for the lounge is called HarborGuest and "
            "its password is seagull-7731.",
            "Heating runs from the first of October to the thirtieth of April. Radiators have a valve on the left "
            "side; turn it clockwise to lower the temperature.",
        ],
    ),
    (
        "Laundry room",
        [
            "The laundry room is in the basement, through the grey door at the end of the bicycle corridor. It is "
            "open every day from 7:00 to 22:00.",
            "The machines take a prepaid laundry card, not coins. Cards are sold at the management office and can be "
            "topped up at the kiosk by the stairs.",
            "Please remove your clothes within fifteen minutes of the end of a cycle, and clean the lint filter of "
            "the dryer after each use.",
        ],
    ),
    (
        "Parking and bicycles",
        [
            "The underground garage has one numbered space per unit; your space number is the same as your unit "
            "number. Guest parking is on the street only.",
            "Visitors may not use the garage. A guest permit for the street can be picked up at the office and is "
            "valid for 48 hours.",
            "Bicycles are stored in the bicycle corridor in the basement. Electric scooters must not be charged "
            "indoors because of the fire risk.",
        ],
    ),
    (
        "Waste and recycling",
        [
            "General waste goes down the chute on each floor between 8:00 and 21:00. Never put glass or boxes in the "
            "chute; they block it for everyone.",
            "Recycling bins for paper, glass and plastic stand in the courtyard behind the bicycle corridor. Flatten "
            "cardboard before you put it in the paper bin.",
            "Bulky items such as furniture or mattresses are collected on the last Thursday of each month; book a "
            "slot with the office by the Tuesday before.",
        ],
    ),
    (
        "Pets",
        [
            "Cats and small dogs are welcome. Each household may keep at most two pets, and every pet must be "
            "registered with the office with a photo and a vaccination record.",
            "A one-time pet deposit of 300 dollars is added to your security deposit and returned when you move out "
            "if the unit shows no pet damage.",
            "Dogs must be on a lead in the corridors, the lifts and the courtyard.",
        ],
    ),
    (
        "Quiet hours and neighbours",
        [
            "Quiet hours are from 22:00 to 7:00 on weeknights and from 23:00 to 9:00 at weekends. During these "
            "hours, please keep music, television and footsteps down.",
            "Parties of more than fifteen guests need the written consent of the office at least a week in "
            "advance.",
            "If a neighbour's noise bothers you, talk to them first; if that does not help, write to the office, "
            "which mediates in confidence.",
        ],
    ),
    (
        "Maintenance requests",
        [
            "Report anything broken through the maintenance form in the tenant portal. Describe the problem and "
            "attach a photo if you can; a technician answers within two working days.",
            "Emergencies such as a burst pipe, a gas smell or no heating in winter are handled around the clock: "
            "call the after-hours line instead of filling in the form.",
            "Technicians enter a unit only with the tenant's permission, except in an emergency, and leave a note "
            "whenever they have been inside.",
        ],
    ),
    (
        "Fire safety",
        [
            "Every unit has a smoke detector on the ceiling of the hallway. Test it on the first day of each month "
            "by holding the button for three seconds.",
            "In case of fire, leave by the stairs, never the lifts, and close the doors behind you. The meeting "
            "point is the playground across Marina Street.",
            "Fire extinguishers hang next to the lift on every floor. Do not block the corridors with shoes, prams "
            "or furniture.",
        ],
    ),
    (
        "Roof terrace and gym",
        [
            "The roof terrace is open to all residents from May to September, from 8:00 to 22:00. Barbecues are "
            "allowed only on the gas grill provided by the building.",
            "The gym on the first floor is open around the clock. Your key fob opens it; children under 16 may use "
            "it only with an adult.",
            "Book the terrace for private events through the tenant portal; bookings close 72 hours ahead.",
        ],
    ),
    (
        "Moving out",
        [
            "Give notice in writing at least two full calendar months before the day you want to leave; notice "
            "given by e-mail counts if the office confirms it.",
            "Before you leave, the office inspects the unit with you. Holes from picture hooks are normal wear, "
            "but walls painted in another colour must be repainted white.",
            "The security deposit is returned within 30 days of the handover of the keys, less the cost of any "
            "repairs beyond normal wear.",
        ],
    ),
]

_HANDBOOK_PROSE = [
    "Residents are asked to treat the shared spaces with the same care as their own homes.",
    "The office publishes notices on the board next to the mailboxes and in the tenant portal.",
    "Most questions can be answered by the office during opening hours, in person or by e-mail.",
    "The building was renovated in 2019, including new windows, lifts and a new heating system.",
    "Please keep the main entrance closed behind you and do not let strangers into the building.",
    "Changes to the rules in this handbook are announced at least one month before they apply.",
    "Residents who need help because of a disability can ask the office for adjustments at any time.",
    "The caretaker walks through the building every morning and reports anything that needs attention.",
]

_MANUAL_PAGES = [
    (
        "Safety instructions",
        [
            "Read these instructions before you use the Corvo K7 espresso machine for the first time. Keep them "
            "for later reference and pass them on with the machine.",
            "Connect the machine only to an earthed socket of 220 to 240 volts. Never immerse the machine, the cord "
            "or the plug in water.",
            "The brew group and the steam wand get very hot during use. Let the machine cool down for at least 30 "
            "minutes before you clean the inside.",
        ],
    ),
    (
        "What is in the box",
        [
            "The box holds the machine, a 58 mm portafilter with a single and a double basket, a tamper, a stainless "
            "steel milk jug of 350 ml and a cleaning brush.",
            "A water filter cartridge and a test strip for water hardness are packed in the small white bag under "
            "the drip tray.",
            "Keep the packaging for the first year: a machine sent in for repair under warranty must travel in its "
            "original box.",
        ],
    ),
    (
        "Filling the water tank",
        [
            "The water tank at the back holds 2.1 litres. Lift it straight up by its handle and fill it with fresh "
            "cold water up to the MAX line.",
            "Before first use, soak the filter cartridge in water for five minutes and screw it into the socket at "
            "the bottom of the tank.",
            "Never fill the tank with sparkling water, milk or hot water: they damage the pump.",
        ],
    ),
    (
        "Grinder settings",
        [
            "The built-in conical burr grinder has 30 settings. Turn the dial on the bean hopper towards 1 for a "
            "finer grind and towards 30 for a coarser one.",
            "Start at setting 12 with fresh medium roast beans. If the espresso runs too fast and tastes sour, grind "
            "finer; if it drips slowly and tastes bitter, grind coarser.",
            "Only change the grind setting while the grinder is running, otherwise beans can jam between the burrs.",
        ],
    ),
    (
        "Brewing an espresso",
        [
            "Press the portafilter into the grinder cradle to grind a dose, then tamp the coffee level with firm "
            "pressure. A double shot needs about 18 grams of ground coffee.",
            "Lock the portafilter into the brew group and press the one-cup or two-cup button. A good double "
            "espresso takes 25 to 30 seconds and yields about 36 grams.",
            "The pressure gauge on the front should point into the grey espresso zone, between 8 and 10 bar, while "
            "the coffee flows.",
        ],
    ),
    (
        "Frothing milk",
        [
            "Fill the milk jug to just below the spout with cold milk. Turn the steam knob anticlockwise and wait "
            "until the orange light stops blinking before you steam.",
            "Hold the tip of the steam wand just under the surface of the milk to draw in air, then lower it to "
            "heat the milk to 60 to 65 degrees Celsius.",
            "Wipe the steam wand with a damp cloth right after use and purge it for two seconds so no milk dries "
            "inside.",
        ],
    ),
    (
        "Daily cleaning",
        [
            "Empty the drip tray and the coffee grounds container every day. The red float in the drip tray rises "
            "when the tray is full.",
            "Once a week, backflush the brew group: put the rubber blind disc in the basket, add half a teaspoon of "
            "cleaning powder and run the cleaning program by holding both cup buttons for five seconds.",
            "The removable parts may be washed by hand in warm soapy water; none of them may go in the dishwasher.",
        ],
    ),
    (
        "Descaling",
        [
            "The descaling light comes on after about 200 litres of water, or sooner with hard water. Descale as "
            "soon as it lights up to protect the boiler.",
            "Use only the Corvo descaling liquid: mix one bottle of 250 ml with one litre of water in the tank and "
            "hold the steam and hot water buttons together for three seconds to start the program.",
            "The program takes about 40 minutes and stops twice so you can empty the drip tray.",
        ],
    ),
    (
        "Troubleshooting",
        [
            "No water comes out: check that the tank sits firmly in place and that the filter is not clogged. If the "
            "pump hums but nothing flows, run the hot water function for a minute to remove air.",
            "The coffee is lukewarm: preheat the cups and the portafilter by running a shot of hot water through "
            "them first.",
            "Error code E4 on the display means the boiler is overheated. Switch the machine off, let it cool for "
            "an hour and switch it on again.",
        ],
    ),
    (
        "Warranty and service",
        [
            "Corvo gives a warranty of three years from the date of purchase for household use. Keep the receipt: "
            "it is your proof of the purchase date.",
            "The warranty does not cover damage from scale, from the use of other descaling products or from "
            "commercial use in offices or cafes.",
            "To arrange a repair, call Corvo customer service at 0800 414 2020 on weekdays between 8:00 and 18:00.",
        ],
    ),
]

_MANUAL_PROSE = [
    "The Corvo K7 is designed for home baristas who want café quality with little effort.",
    "Always use fresh beans: coffee loses most of its aroma within a few weeks of roasting.",
    "The illustrations in this manual may differ slightly from your model.",
    "Switch the machine off when you do not use it for a long time; it also switches off after 30 minutes idle.",
    "Place the machine on a flat, stable surface away from the edge of the counter.",
    "Children must not play with the machine or clean it without supervision.",
    "Spare parts and accessories can be ordered from your dealer.",
    "The machine needs about six minutes to heat up after you switch it on.",
]

_POLICY_PAGES = [
    (
        "Purpose and scope",
        [
            "This policy applies to every employee of Northwind Logistics who travels on company business, and to "
            "contractors whose contracts refer to it.",
            "Travel must serve a clear business purpose. Trips are approved in advance by the traveller's line "
            "manager in the expense system before anything is booked.",
            "The finance department owns this policy. Questions go to the travel desk at travel@northwind.example.",
        ],
    ),
    (
        "Booking travel",
        [
            "All flights, trains and hotels are booked through the company's travel agency, Skyline Travel, so that "
            "the company knows where its travellers are in an emergency.",
            "Book at least 14 days before departure whenever possible; fares booked later need a short explanation "
            "in the expense system.",
            "Personal loyalty points may be kept, but they must never influence the choice of airline or hotel.",
        ],
    ),
    (
        "Air travel",
        [
            "Flights under six hours are booked in economy class. Business class is allowed for flights of six "
            "hours or longer, or with the written approval of a director.",
            "Choose the lowest fare that fits the business schedule within two hours of the preferred departure "
            "time.",
            "Checked luggage is reimbursed for trips of more than three nights or when carrying equipment for work.",
        ],
    ),
    (
        "Hotels",
        [
            "The nightly hotel limit is 180 euros in most cities and 260 euros in London, Paris, New York, Zurich "
            "and Tokyo, breakfast included.",
            "Stays longer than ten nights in one place should use a serviced apartment, which the travel agency "
            "arranges at a monthly rate.",
            "Minibar, room films and laundry for stays of fewer than five nights are personal expenses.",
        ],
    ),
    (
        "Ground transport",
        [
            "Use public transport where it is practical. Taxis are reimbursed between the airport and the hotel, and "
            "after 21:00 for safety.",
            "Employees who use their own car on business are reimbursed at 0.30 euros per kilometre, which covers "
            "fuel, insurance and wear.",
            "Rental cars are booked in the compact category; a larger car needs a reason, such as four travellers or "
            "heavy equipment.",
        ],
    ),
    (
        "Meals and daily allowance",
        [
            "Travellers receive a daily allowance of 55 euros for meals on a full travel day and 30 euros on the "
            "days of departure and return.",
            "Meals paid by the company, such as a conference lunch or a client dinner, reduce the allowance for that "
            "day by the meal's share.",
            "Alcohol is never reimbursed, except at client dinners approved in advance by a director.",
        ],
    ),
    (
        "Expense claims",
        [
            "Submit expense claims in the expense system within 30 days of returning from a trip. Claims submitted "
            "later are paid only with the approval of the finance director.",
            "Attach a photo of every receipt over 25 euros. For smaller amounts a short description is enough.",
            "Approved claims are paid with the next monthly salary; claims approved before the 20th are paid that "
            "month.",
        ],
    ),
    (
        "Safety and insurance",
        [
            "Every business trip is covered by the company's travel insurance, including medical costs abroad and "
            "repatriation. The policy number is NW-88213-T.",
            "Before travelling to a country with a high-risk rating, the traveller needs the approval of the "
            "security officer, Daniel Osei, and a safety briefing.",
            "In an emergency abroad, call the 24-hour assistance line printed on the back of your company badge.",
        ],
    ),
]

_POLICY_PROSE = [
    "Northwind Logistics expects travellers to spend the company's money as carefully as their own.",
    "Exceptions to this policy are rare and must be approved in writing before the trip.",
    "The travel desk reviews this policy every year and publishes changes on the intranet.",
    "Travellers remain responsible for their own passports, visas and vaccinations.",
    "Sustainable choices, such as a train instead of a short flight, are encouraged where the schedule allows.",
    "Managers check that expense claims match the approved trip before they approve them.",
    "Breaking this policy may lead to expenses not being reimbursed, and in serious cases to disciplinary steps.",
    "Travellers who are unsure whether an expense is allowed should ask the travel desk before they pay.",
]

QUESTIONS = [
    Question(HANDBOOK, 1, "What are the opening hours of the management office?", "words"),
    Question(HANDBOOK, 1, "Who is the building manager?", "words"),
    Question(HANDBOOK, 2, "How much is the late fee for rent?", "words"),
    Question(HANDBOOK, 2, "Is there an extra charge if I pay with a credit card?", "meaning"),
    Question(HANDBOOK, 3, "What is the password of the guest network?", "words"),
    Question(HANDBOOK, 3, "Do I have to pay for my own electricity?", "words"),
    Question(HANDBOOK, 4, "Where can I wash my clothes?", "meaning"),
    Question(HANDBOOK, 5, "Can my friends leave their car in the garage when they visit?", "meaning"),
    Question(HANDBOOK, 6, "When is old furniture picked up?", "meaning"),
    Question(HANDBOOK, 7, "How many pets may we keep?", "words"),
    Question(HANDBOOK, 8, "Until what time can I play loud music on a Saturday night?", "meaning"),
    Question(HANDBOOK, 9, "Water is pouring from a pipe in my kitchen at 2 am. What do I do?", "meaning"),
    Question(HANDBOOK, 10, "Where do we gather if the building is on fire?", "meaning"),
    Question(HANDBOOK, 11, "Can teenagers work out in the gym alone?", "meaning"),
    Question(HANDBOOK, 12, "How long does it take to get my security deposit back?", "words"),
    Question(MANUAL, 1, "What voltage does the espresso machine need?", "words"),
    Question(MANUAL, 2, "What size is the portafilter?", "words"),
    Question(MANUAL, 3, "How much water fits in the tank?", "words"),
    Question(MANUAL, 3, "Can I use fizzy water in the machine?", "meaning"),
    Question(MANUAL, 4, "My coffee tastes sour, what should I change?", "meaning"),
    Question(MANUAL, 5, "How many grams of coffee go into a double shot?", "words"),
    Question(MANUAL, 5, "How long should the extraction take?", "meaning"),
    Question(MANUAL, 6, "How hot should the milk get when steaming?", "words"),
    Question(MANUAL, 7, "Can the parts go in the dishwasher?", "words"),
    Question(MANUAL, 8, "How do I remove limescale from the machine?", "meaning"),
    Question(MANUAL, 9, "What does error E4 mean?", "words"),
    Question(MANUAL, 9, "Why is my espresso not hot enough?", "meaning"),
    Question(MANUAL, 10, "How long is the guarantee?", "meaning"),
    Question(MANUAL, 10, "What is the phone number of customer service?", "words"),
    Question(POLICY, 1, "Who has to approve a business trip before booking?", "words"),
    Question(POLICY, 2, "Which travel agency do we have to use?", "words"),
    Question(POLICY, 3, "When may I fly business class?", "words"),
    Question(POLICY, 4, "What is the maximum I can spend on a hotel room in Paris?", "meaning"),
    Question(POLICY, 5, "How much do I get back for driving my own car?", "meaning"),
    Question(POLICY, 6, "How much money do I get for food per day?", "meaning"),
    Question(POLICY, 6, "Is wine at dinner reimbursed?", "meaning"),
    Question(POLICY, 7, "What is the deadline for submitting expense claims?", "words"),
    Question(POLICY, 7, "Do I need a receipt for a small purchase like a coffee?", "meaning"),
    Question(POLICY, 8, "What is the travel insurance policy number?", "words"),
    Question(POLICY, 8, "Who must approve a trip to a dangerous country?", "meaning"),
]

_DOCUMENTS = [
    (HANDBOOK, "Harbor View Apartments - Tenant handbook", _HANDBOOK_PAGES, _HANDBOOK_PROSE),
    (MANUAL, "Corvo K7 espresso machine - User manual", _MANUAL_PAGES, _MANUAL_PROSE),
    (POLICY, "Northwind Logistics - Travel and expense policy", _POLICY_PAGES, _POLICY_PROSE),
]


def document_pages(name: str, seed: int = 11) -> list[str]:
    """The pages of one document as make_text_pdf text: a "# " heading, the page's facts, and a paragraph of the
    document's general prose before and after them (sentences from its pool, a fixed seed)."""
    for document, title, pages, prose in _DOCUMENTS:
        if document == name:
            rng = random.Random(f"{seed}:{name}")
            texts = []
            for number, (heading, paragraphs) in enumerate(pages, start=1):
                before = " ".join(rng.sample(prose, 3))
                after = " ".join(rng.sample(prose, 3))
                footer = f"{title} - page {number}"
                texts.append("\n\n".join([f"# {heading}", before, *paragraphs, after, footer]))
            return texts
    raise KeyError(name)


def document_names() -> list[str]:
    return [name for name, _, _, _ in _DOCUMENTS]


def document_pdfs() -> dict[str, bytes]:
    """File name → PDF bytes, for every document of the set."""
    return {name: make_text_pdf(document_pages(name)) for name in document_names()}

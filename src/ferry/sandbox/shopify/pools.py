"""Word pools for the store generator: names in many scripts, places, products, and the bad values real stores hold.

Every name entry is ``(first, last, ascii_first, ascii_last)``; the ASCII pair builds
plausible email handles for people whose names are not written in Latin script.
Emails use reserved example domains only, so nothing generated can reach a real mailbox.
"""

from __future__ import annotations

NameEntry = tuple[str, str, str, str]

NAMES: dict[str, tuple[NameEntry, ...]] = {
    "latin": (
        ("James", "Smith", "james", "smith"), ("Mary", "Johnson", "mary", "johnson"),
        ("Olivia", "Brown", "olivia", "brown"), ("Liam", "Garcia", "liam", "garcia"),
        ("Emma", "Miller", "emma", "miller"), ("Noah", "Davis", "noah", "davis"),
        ("Ava", "Wilson", "ava", "wilson"), ("Lucas", "Taylor", "lucas", "taylor"),
        ("Sophia", "Anderson", "sophia", "anderson"), ("Ethan", "Thomas", "ethan", "thomas"),
        ("Mia", "Moore", "mia", "moore"), ("Henry", "Martin", "henry", "martin"),
        ("Grace", "Lee", "grace", "lee"), ("Jack", "Walker", "jack", "walker"),
        ("Chloe", "Hall", "chloe", "hall"), ("Daniel", "Young", "daniel", "young"),
        ("Ella", "King", "ella", "king"), ("Samuel", "Wright", "samuel", "wright"),
        ("Lily", "O'Brien", "lily", "obrien"), ("Ryan", "McDonald", "ryan", "mcdonald"),
    ),
    "latin_diacritics": (
        ("José", "Núñez", "jose", "nunez"), ("Zoë", "Müller", "zoe", "muller"),
        ("Björn", "Østergård", "bjorn", "ostergard"), ("François", "Lefèvre", "francois", "lefevre"),
        ("Łukasz", "Dvořák", "lukasz", "dvorak"), ("Søren", "Kierkegård", "soren", "kierkegard"),
        ("İlknur", "Çelik", "ilknur", "celik"), ("João", "Gonçalves", "joao", "goncalves"),
        ("Ana", "Šimůnek", "ana", "simunek"), ("Renée", "Brontë", "renee", "bronte"),
        ("Dóra", "Kovács", "dora", "kovacs"), ("Ñuño", "Peña", "nuno", "pena"),
    ),
    "cyrillic": (
        ("Анна", "Иванова", "anna", "ivanova"), ("Дмитрий", "Смирнов", "dmitry", "smirnov"),
        ("Ольга", "Кузнецова", "olga", "kuznetsova"), ("Сергей", "Соколов", "sergey", "sokolov"),
        ("Олена", "Шевченко", "olena", "shevchenko"), ("Ђорђе", "Петровић", "djordje", "petrovic"),
    ),
    "greek": (
        ("Γιώργος", "Παπαδόπουλος", "giorgos", "papadopoulos"), ("Ελένη", "Οικονόμου", "eleni", "oikonomou"),
        ("Νίκος", "Γεωργίου", "nikos", "georgiou"), ("Μαρία", "Καραγιάννη", "maria", "karagianni"),
    ),
    "cjk": (
        ("伟", "王", "wei", "wang"), ("娜", "李", "na", "li"), ("花子", "佐藤", "hanako", "sato"),
        ("一郎", "鈴木", "ichiro", "suzuki"), ("민준", "김", "minjun", "kim"), ("서연", "이", "seoyeon", "lee"),
        ("秀英", "張", "xiuying", "zhang"), ("結衣", "高橋", "yui", "takahashi"),
    ),
    "arabic": (
        ("محمد", "العلي", "mohammed", "alali"), ("فاطمة", "حسن", "fatima", "hassan"),
        ("يوسف", "الخطيب", "youssef", "alkhatib"), ("ليلى", "منصور", "layla", "mansour"),
    ),
    "hebrew": (
        ("דוד", "כהן", "david", "cohen"), ("שרה", "לוי", "sarah", "levi"), ("נועה", "מזרחי", "noa", "mizrahi"),
    ),
    "devanagari": (
        ("राहुल", "शर्मा", "rahul", "sharma"), ("प्रिया", "पटेल", "priya", "patel"),
        ("अमित", "सिंह", "amit", "singh"), ("सुनीता", "गुप्ता", "sunita", "gupta"),
    ),
    "thai": (
        ("สมชาย", "ใจดี", "somchai", "jaidee"), ("สุดา", "ศรีสุข", "suda", "srisuk"),
        ("ประยุทธ์", "วงศ์ใหญ่", "prayut", "wongyai"),
    ),
}

# Weights in percent; "latin" is plain ASCII Latin, the rest are flagged as anomalies ("script_<name>").
SCRIPT_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("latin", 62), ("latin_diacritics", 14), ("cyrillic", 5), ("greek", 3), ("cjk", 6),
    ("arabic", 3), ("hebrew", 2), ("devanagari", 3), ("thai", 2),
)

EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "shop.example")

MALFORMED_EMAILS = (
    "jane.doe@", "bob@@example.com", "a b@example.com", "nobody", "mary@example",
    "@example.com", "john.smith@example..com", "info(at)example.com",
)
MALFORMED_PHONES = ("call me", "+1 (555) 010-", "0049 30 1234567 ext. 89", "555", "n/a", "+44 20 7946 095x")

# Strings longer than the Salesforce fields they map to (FirstName 40, LastName 80, MailingCity 40,
# MailingPostalCode 20, Product2.Name 255, Description 32,000, OrderItem description 255).
LONG_FIRST_NAMES = (
    "Maria Fernanda Guadalupe Concepción de los Ángeles",
    "Pablo Diego José Francisco de Paula Juan Nepomuceno",
    "Adolph Blaine Charles David Earl Frederick Gerald",
)
LONG_LAST_NAMES = (
    "Wolfeschlegelsteinhausenbergerdorff-Welchevoralternwarengewissenhaftschaferswessenschafewarenwohlgepflege",
    "Featherstonehaugh-Cholmondeley-Marjoribanks-Mainwaring-Wriothesley-Fiennes-Sackville",
)
LONG_CITIES = (
    "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch",
    "Krung Thep Maha Nakhon Amon Rattanakosin Mahinthara Ayuthaya",
    "Taumatawhakatangihangakoauauotamateaturipukakapikimaungahoronukupokaiwhenuakitanatahu",
)
LONG_ZIPS = ("10115 (Hinterhaus, 3. OG links)", "SW1A 1AA - DELIVER TO BACK DOOR", "M5V 2T6 BUZZER 1234#")

CUSTOMER_NOTES = (
    "VIP — prefers delivery after 5pm 📦", "Wholesale inquiry, call back 🙏", "Allergic to latex ⚠️",
    "Asked for gift receipt 🎁", "Repeat customer, very friendly 😊", "Returned 2 items last year ↩️",
)
ORDER_NOTES = (
    "Please gift wrap 🎁", "Leave at the door, dog is friendly 🐕", "Rush order!! 🚀",
    "Happy birthday Mom ❤️", "Combine with previous order please", "Ring twice 🔔",
)
LONG_NOTE_PARAGRAPH = (
    "Customer called several times about this order; transcript follows. "
    "Ella pidió cambiar la dirección — потом отменила 🙃 — 然后又改回来了. "
)

# (country, country_code, [(city, province, province_code, zip)], phone prefix, tax rate in basis points)
COUNTRIES: tuple[tuple[str, str, tuple[tuple[str, str, str, str], ...], str, int], ...] = (
    ("United States", "US", (("New York", "New York", "NY", "10001"), ("Austin", "Texas", "TX", "73301"),
                             ("Portland", "Oregon", "OR", "97201"), ("Chicago", "Illinois", "IL", "60601")),
     "+1555", 800),
    ("Canada", "CA", (("Toronto", "Ontario", "ON", "M5V 2T6"), ("Montréal", "Quebec", "QC", "H2X 1Y4")), "+1438", 1300),
    ("United Kingdom", "GB", (("London", "England", "ENG", "SW1A 1AA"), ("Manchester", "England", "ENG", "M1 1AE")),
     "+44207", 2000),
    ("Germany", "DE", (("Berlin", "Berlin", "BE", "10115"), ("München", "Bavaria", "BY", "80331")), "+4930", 1900),
    ("France", "FR", (("Paris", "", "", "75001"), ("Besançon", "", "", "25000")), "+331", 2000),
    ("Japan", "JP", (("東京都", "Tōkyō", "JP-13", "100-0001"), ("大阪市", "Ōsaka", "JP-27", "530-0001")), "+813", 1000),
    ("Australia", "AU", (("Sydney", "New South Wales", "NSW", "2000"),), "+612", 1000),
    ("Greece", "GR", (("Αθήνα", "", "", "105 57"),), "+30210", 2400),
    ("Israel", "IL", (("תל אביב", "", "", "6100000"),), "+9723", 1700),
    ("India", "IN", (("मुंबई", "Maharashtra", "MH", "400001"),), "+9122", 1800),
)
COUNTRY_WEIGHTS = (55, 8, 8, 7, 5, 4, 5, 2, 2, 4)

STREETS = ("Main St", "Oak Avenue", "Hauptstraße", "Rue de la Paix", "High Street", "Elm Road", "Queen St W")

VENDORS = ("Acme Outdoor", "Northwind", "Bergström & Söhne", "Kōbō Ceramics", "Atelier Lune", "ferry-demo")
PRODUCT_TYPES = ("Jacket", "Mug", "Backpack", "T-Shirt", "Candle", "Notebook", "Sneakers", "Tea")
ADJECTIVES = ("Classic", "Organic", "Vintage", "Ultralight", "Handmade", "Everyday", "Limited", "Recycled")
NOUNS = ("Explorer", "Harbor", "Summit", "Meadow", "Aurora", "Canyon", "Lagoon", "Ember", "Fjord")
FOREIGN_TITLES = ("Чайник «Самовар»", "抹茶セット", "Κούπα Ελιά", "Tasse für Kaffee ☕", "קערת קרמיקה")
OPTIONS = (
    ("Size", ("XS", "S", "M", "L", "XL")),
    ("Color", ("Black", "Navy", "Forest Green", "Sand", "Crimson")),
    ("Material", ("Cotton", "Wool", "Linen")),
)
CUSTOM_ITEMS = ("Gift wrapping", "Custom engraving", "Rush handling fee", "Donation 🌱", "Alteration service")
CARRIERS = (("UPS", "https://www.ups.com/track?tracknum="), ("DHL", "https://www.dhl.com/track?id="),
            ("USPS", "https://tools.usps.com/go/TrackConfirmAction?tLabels="))
CANCEL_REASONS = ("customer", "fraud", "inventory", "declined", "other")
GATEWAYS = ("shopify_payments", "paypal", "manual", "bogus")
TAGS = ("wholesale", "vip", "newsletter", "returning", "b2b", "influencer", "retail", "Ⓥ vegan")

# Presentment currencies with a fixed USD rate (per mille) and minor-unit digits.
CURRENCIES: tuple[tuple[str, int, int], ...] = (
    ("EUR", 920, 2), ("GBP", 790, 2), ("CAD", 1370, 2), ("JPY", 151000, 0), ("AUD", 1520, 2),
)

"""Word lists for :mod:`mssante.directory.synth`: French names, professions, specialties,
structures and towns. Frequencies are rough (most common first; the synthesiser weights by rank),
enough to make a file whose shape resembles the real extraction: many MARTINs, a few rare
names, accents where French names carry them.

Profession codes are the health-profession nomenclature's (NOS TRE_G15: 10 Médecin,
21 Pharmacien, 40 Chirurgien-Dentiste, 50 Sage-Femme, 60 Infirmier, 70 Masseur-
Kinésithérapeute…); specialty codes follow NOS TRE_R38 (SM54 Médecine générale…) as far as we
know them: good for test files, not a reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

# fmt: off

LAST_NAMES: tuple[str, ...] = (
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL",
    "FOURNIER", "GIRARD", "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT",
    "MULLER", "LEFÈVRE", "FAURE", "ANDRÉ", "MERCIER", "BLANC", "GUÉRIN", "BOYER", "GARNIER",
    "CHEVALIER", "FRANÇOIS", "LEGRAND", "GAUTHIER", "GARCIA", "PERRIN", "ROBIN", "CLÉMENT",
    "MORIN", "NICOLAS", "HENRY", "ROUSSEL", "MATHIEU", "GAUTIER", "MASSON", "MARCHAND", "DUVAL",
    "DENIS", "DUMONT", "MARIE", "LEMAIRE", "NOËL", "MEYER", "DUFOUR", "MEUNIER", "BRUN",
    "BLANCHARD", "GIRAUD", "JOLY", "RIVIÈRE", "LUCAS", "BRUNET", "GAILLARD", "BARBIER", "ARNAUD",
    "MARTINEZ", "GÉRARD", "ROCHE", "RENARD", "SCHMITT", "ROY", "LEROUX", "COLIN", "VIDAL",
    "CARON", "PICARD", "ROGER", "FABRE", "AUBERT", "LEMOINE", "RENAUD", "DUMAS", "LACROIX",
    "OLIVIER", "PHILIPPE", "BOURGEOIS", "PIERRE", "BENOÎT", "REY", "LECLERC", "PAYET", "ROLLAND",
    "LECLERCQ", "GUILLAUME", "LECOMTE", "LOPEZ", "JEAN", "DUPUY", "GUILLOT", "HUBERT", "BERGER",
    "CARPENTIER", "SANCHEZ", "DUPUIS", "MOULIN", "LOUIS", "DESCHAMPS", "HUET", "VASSEUR", "PEREZ",
    "BOUCHER", "FLEURY", "ROYER", "KLEIN", "JACQUET", "ADAM", "PARIS", "POIRIER", "MARTY",
    "AUBRY", "GUYOT", "CARRÉ", "CHARLES", "RENAULT", "CHARPENTIER", "MÉNARD", "MAILLARD",
    "BARON", "BERTIN", "BAILLY", "HERVÉ", "SCHNEIDER", "FERNANDEZ", "LE GALL", "COLLET", "LÉGER",
    "BOUVIER", "JULIEN", "PRÉVOST", "MILLET", "PERROT", "DANIEL", "LE ROUX", "COUSIN", "GERMAIN",
    "BRETON", "BESSON", "LANGLOIS", "RÉMY", "LE GOFF", "PELLETIER", "LÉVÊQUE", "PERRIER",
    "LEBLANC", "BARRÉ", "LEBRUN", "MARCHAL", "WEBER", "MALLET", "HAMON", "BOULANGER", "JACOB",
    "MONNIER", "MICHAUD", "RODRIGUEZ", "GUICHARD", "GILLET", "ÉTIENNE", "GRONDIN", "POULAIN",
    "TESSIER", "CHEVALLIER", "COLLIN", "CHAUVIN", "DA SILVA", "BOUCHET", "GAY", "LEMAÎTRE",
    "BÉNARD", "MARÉCHAL", "HUMBERT", "REYNAUD", "ANTOINE", "HOARAU", "PERRET", "BARTHÉLEMY",
    "CORDIER", "PICHON", "LEJEUNE", "GILBERT", "LAMY", "DELAUNAY", "PASQUIER", "CARLIER",
    "LAPORTE", "DEVAUX", "VALLÉE", "MAILLOT", "LAINÉ", "BOUSQUET", "DELMAS", "GOSSELIN",
    "SAUVAGE", "BAUDRY", "BARBE", "FERRAND", "BOURDON", "TEXIER", "CHEVRIER", "GAUDIN",
    "HOAREAU", "FOUCHER", "PAGÈS", "DELORME", "MARIN", "COLAS", "LAVAL", "RIBEIRO", "MERLE",
    "DIALLO", "NGUYEN", "BENSAÏD", "MARTINS", "FERREIRA", "DOS SANTOS", "CHERIF", "HADDAD",
    "D'ALMEIDA", "DE OLIVEIRA", "SAINT-MARTIN", "DUPONT-MOREAU", "LE BIHAN", "QUÉRÉ", "KERBRAT",
    "CORRE", "TANGUY", "LE BRETON", "ABGRALL", "ETCHEVERRY", "IRIGOYEN", "ARRIGHI", "SANTONI",
    "PAOLI", "LOPES", "BEN AMOR", "TRAORÉ", "COULIBALY", "KOUADIO", "ZIEGLER", "HOFFMANN",
    "WAGNER", "FISCHER", "ŒHLER", "CŒURDEROY", "DUCHÊNE", "CHÂTEAU", "FAVRE", "BERTHIER",
)

FIRST_NAMES: tuple[str, ...] = (
    "Marie", "Jean", "Pierre", "Nathalie", "Isabelle", "Philippe", "Sylvie", "Catherine",
    "Michel", "Christophe", "Stéphane", "Frédéric", "Sophie", "Nicolas", "Valérie", "Laurent",
    "Sandrine", "Christine", "Julien", "Thomas", "Céline", "Éric", "David", "Caroline", "Patrick",
    "Olivier", "Anne", "Sébastien", "Aurélie", "Claire", "Camille", "Julie", "Émilie", "Hélène",
    "François", "Alain", "Véronique", "Virginie", "Pascal", "Laurence", "Jérôme", "Vincent",
    "Anne-Marie", "Jean-Pierre", "Jean-Luc", "Marie-Claire", "Élodie", "Mathieu", "Guillaume",
    "Antoine", "Alexandre", "Maxime", "Romain", "Lucie", "Léa", "Chloé", "Manon", "Laura",
    "Sarah", "Pauline", "Marion", "Mélanie", "Audrey", "Delphine", "Karine", "Corinne",
    "Florence", "Agnès", "Bénédicte", "Béatrice", "Brigitte", "Chantal", "Dominique", "Françoise",
    "Geneviève", "Josiane", "Martine", "Monique", "Nadine", "Odile", "Pascale", "Sabine",
    "Thérèse", "Yvette", "Zoé", "Anaïs", "Inès", "Maëlle", "Gaëlle", "Noémie", "Clémence",
    "Mélissa", "Océane", "Justine", "Margaux", "Charlotte", "Juliette", "Louise", "Alice",
    "Jeanne", "Emma", "Léonie", "Héloïse", "Solène", "Estelle", "Nadège", "Ségolène", "Aude",
    "Bertrand", "Benoît", "Bruno", "Cédric", "Damien", "Denis", "Didier", "Emmanuel", "Fabien",
    "Fabrice", "Franck", "Gérard", "Gilles", "Grégory", "Hervé", "Hugues", "Jacques", "Joël",
    "José", "Lionel", "Loïc", "Ludovic", "Marc", "Mickaël", "Noël", "Régis", "Rémi", "Serge",
    "Thierry", "Yann", "Yves", "Adrien", "Arnaud", "Aurélien", "Baptiste", "Benjamin",
    "Clément", "Florian", "Hugo", "Jérémy", "Kévin", "Lucas", "Quentin", "Raphaël", "Théo",
    "Valentin", "Victor", "Xavier", "Gaël", "Maël", "Anthony", "Cyril", "Dimitri", "Étienne",
    "Félix", "Gaspard", "Jean-François", "Jean-Marc", "Jean-Michel", "Jean-Philippe", "Paul",
    "Louis", "Henri", "Georges", "René", "André", "Bernard", "Claude", "Daniel", "Christian",
    "Guy", "Roger", "Robert", "Mohamed", "Karim", "Rachid", "Fatima", "Nadia", "Leïla", "Yasmine",
    "Samir", "Mehdi", "Amina", "Aïcha", "Ibrahim", "Moussa", "Nguyen", "Linh", "Thi", "Minh",
    "Ana", "João", "Manuel", "Carlos", "Andrea", "Elena", "Giulia", "Matteo", "Hannah", "Lukas",
    "Ophélie", "Bérénice", "Cécile", "Mireille", "Noëlle", "Zoë", "Joëlle", "Maïté", "Éloïse",
    "Anne-Sophie", "Marie-Hélène", "Marie-Noëlle", "Pierre-Yves", "Jean-Noël", "Loïck",
)

# (code, label, weight): NOS TRE_G15 ProfessionSante; weights ~ the share of MSSanté mailboxes.
PROFESSIONS: tuple[tuple[str, str, int], ...] = (
    ("10", "Médecin", 36),
    ("60", "Infirmier", 24),
    ("21", "Pharmacien", 10),
    ("70", "Masseur-Kinésithérapeute", 8),
    ("40", "Chirurgien-Dentiste", 6),
    ("50", "Sage-Femme", 4),
    ("91", "Orthophoniste", 2),
    ("80", "Pédicure-Podologue", 2),
    ("98", "Manipulateur ERM", 2),
    ("92", "Orthoptiste", 1),
    ("94", "Ergothérapeute", 1),
    ("95", "Diététicien", 1),
    ("96", "Psychomotricien", 1),
    ("26", "Audioprothésiste", 1),
    ("28", "Opticien-Lunetier", 1),
)

# Liberal practitioners' operator domain, by profession code (BRIEF §4: prenom.nom@medecin…).
LIBERAL_DOMAINS: Mapping[str, str] = MappingProxyType({
    "10": "medecin.mssante.fr",
    "21": "pharmacien.mssante.fr",
    "40": "chirurgien-dentiste.mssante.fr",
    "50": "sage-femme.mssante.fr",
    "60": "infirmier.mssante.fr",
    "70": "masseur-kinesitherapeute.mssante.fr",
})
OTHER_LIBERAL_DOMAIN = "paramedical.mssante.fr"

# (code, label, weight): NOS TRE_R38 (specialties of physicians).
SPECIALTIES: tuple[tuple[str, str, int], ...] = (
    ("SM54", "Médecine générale", 40),
    ("SM26", "Qualifié en Médecine Générale", 8),
    ("SM04", "Cardiologie et maladies vasculaires", 5),
    ("SM02", "Anesthésie-réanimation", 5),
    ("SM40", "Pédiatrie", 4),
    ("SM42", "Psychiatrie", 4),
    ("SM44", "Radio-diagnostic", 4),
    ("SM38", "Ophtalmologie", 3),
    ("SM20", "Gynécologie-obstétrique", 3),
    ("SM15", "Dermatologie et vénéréologie", 2),
    ("SM24", "Gastro-entérologie et hépatologie", 2),
    ("SM32", "Neurologie", 2),
    ("SM41", "Pneumologie", 2),
    ("SM47", "Rhumatologie", 2),
    ("SM30", "Néphrologie", 1),
    ("SM27", "Médecine interne", 1),
    ("SM18", "Gériatrie", 1),
    ("SM34", "O.R.L et chirurgie cervico-faciale", 1),
)

# (name, postal code, département): prefectures and large towns.
TOWNS: tuple[tuple[str, str, str], ...] = (
    ("Paris", "75013", "75"), ("Marseille", "13005", "13"), ("Lyon", "69003", "69"),
    ("Toulouse", "31059", "31"), ("Nice", "06000", "06"), ("Nantes", "44093", "44"),
    ("Montpellier", "34295", "34"), ("Strasbourg", "67091", "67"), ("Bordeaux", "33076", "33"),
    ("Lille", "59037", "59"), ("Rennes", "35033", "35"), ("Reims", "51092", "51"),
    ("Toulon", "83056", "83"), ("Saint-Étienne", "42055", "42"), ("Le Havre", "76083", "76"),
    ("Grenoble", "38043", "38"), ("Dijon", "21079", "21"), ("Angers", "49933", "49"),
    ("Nîmes", "30029", "30"), ("Villeurbanne", "69100", "69"), ("Clermont-Ferrand", "63003", "63"),
    ("Le Mans", "72037", "72"), ("Aix-en-Provence", "13616", "13"), ("Brest", "29609", "29"),
    ("Tours", "37044", "37"), ("Amiens", "80054", "80"), ("Limoges", "87042", "87"),
    ("Annecy", "74370", "74"), ("Perpignan", "66046", "66"), ("Besançon", "25030", "25"),
    ("Metz", "57038", "57"), ("Orléans", "45067", "45"), ("Rouen", "76031", "76"),
    ("Mulhouse", "68070", "68"), ("Caen", "14033", "14"), ("Nancy", "54035", "54"),
    ("Argenteuil", "95107", "95"), ("Saint-Denis", "97400", "974"), ("Roubaix", "59100", "59"),
    ("Tourcoing", "59208", "59"), ("Avignon", "84902", "84"), ("Poitiers", "86021", "86"),
    ("Pau", "64046", "64"), ("La Rochelle", "17019", "17"), ("Béziers", "34525", "34"),
    ("Valence", "26953", "26"), ("Chambéry", "73011", "73"), ("Quimper", "29107", "29"),
    ("Troyes", "10003", "10"), ("Niort", "79021", "79"), ("Lorient", "56322", "56"),
    ("Vannes", "56017", "56"), ("Bayonne", "64109", "64"), ("Colmar", "68024", "68"),
    ("Saint-Brieuc", "22027", "22"), ("Ajaccio", "20303", "2A"), ("Bastia", "20604", "2B"),
    ("Fort-de-France", "97261", "972"), ("Pointe-à-Pitre", "97159", "971"),
    ("Cayenne", "97306", "973"), ("Mamoudzou", "97600", "976"), ("Évreux", "27023", "27"),
    ("Laval", "53015", "53"), ("Périgueux", "24019", "24"), ("Agen", "47923", "47"),
    ("Montauban", "82013", "82"), ("Albi", "81013", "81"), ("Rodez", "12027", "12"),
    ("Mâcon", "71018", "71"), ("Bourg-en-Bresse", "01012", "01"), ("Châteauroux", "36019", "36"),
)

# (kind, prefix of the raison sociale, prefix of the domain label, weight, how many per town)
STRUCTURE_KINDS: tuple[tuple[str, str, str, int, int], ...] = (
    ("CHU", "CENTRE HOSPITALIER UNIVERSITAIRE DE", "chu", 12, 1),
    ("CH", "CENTRE HOSPITALIER DE", "ch", 8, 1),
    ("CLINIQUE", "CLINIQUE", "clinique", 4, 2),
    ("CABINET", "CABINET MEDICAL", "cabinet", 2, 2),
    ("MSP", "MAISON DE SANTE PLURIPROFESSIONNELLE DE", "msp", 2, 1),
    ("LABO", "LABORATOIRE DE BIOLOGIE MEDICALE", "labo", 1, 1),
    ("EHPAD", "EHPAD", "ehpad", 1, 1),
)

CLINIC_NAMES: tuple[str, ...] = (
    "SAINT-JOSEPH", "DU PARC", "SAINTE-MARIE", "DES CÈDRES", "PASTEUR", "DU LITTORAL",
    "LES FLEURS", "BEAU SOLEIL", "SAINT-GEORGES", "DE L'ESPÉRANCE", "JEANNE D'ARC", "LA ROSERAIE",
    "DES ALPES", "NOTRE-DAME", "DU MONT", "LES TILLEULS", "VAL DE SEINE", "DE LA SAUVEGARDE",
)

SERVICES: tuple[str, ...] = (
    "Cardiologie", "Urgences", "Pédiatrie", "Maternité", "Radiologie", "Oncologie", "Gériatrie",
    "Chirurgie orthopédique", "Néphrologie", "Pneumologie", "Neurologie", "Psychiatrie adulte",
    "Secrétariat médical", "Bureau des entrées", "Pharmacie à usage intérieur", "Laboratoire",
    "Médecine interne", "Réanimation", "Dermatologie", "Gastro-entérologie", "Ophtalmologie",
    "Endocrinologie", "Hématologie", "Soins de suite", "Consultations externes", "Anesthésie",
)

APPLICATIONS: tuple[str, ...] = (
    "lgc", "dpi", "resultats", "comptes-rendus", "imagerie", "biologie", "lettres-liaison",
    "admissions", "dmp", "pacs",
)

STREET_TYPES: tuple[str, ...] = ("R", "AV", "BD", "PL", "CHE", "ALL", "IMP", "QUAI", "RTE")
STREET_NAMES: tuple[str, ...] = (
    "DE LA RÉPUBLIQUE", "VICTOR HUGO", "JEAN JAURÈS", "DU GÉNÉRAL DE GAULLE", "PASTEUR",
    "DE LA GARE", "DES LILAS", "GAMBETTA", "DE VERDUN", "FOCH", "DU 8 MAI 1945", "DES ÉCOLES",
    "SAINT-MICHEL", "DE L'HÔPITAL", "DES TILLEULS", "NATIONALE", "DU MARÉCHAL LECLERC",
    "CLEMENCEAU", "DE PARIS", "DES ACACIAS", "CARNOT", "DE LA PAIX", "ÉMILE ZOLA", "MOLIÈRE",
)
# fmt: on

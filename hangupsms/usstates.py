"""The US state of a number's area code, for states whose hours for marketing texts are
stricter than the federal 08:00-21:00 (windows keyed `US-FL`, ISO 3166-2)."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import geocoder

STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA",
    "Kansas": "KS", "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD",
    "Massachusetts": "MA", "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS",
    "Missouri": "MO", "Montana": "MT", "Nebraska": "NE", "Nevada": "NV",
    "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM", "New York": "NY",
    "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington": "WA", "Washington State": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Washington D.C.": "DC",
}  # fmt: skip
CODES = frozenset(STATES.values())
_CITY_STATE = re.compile(r",\s*([A-Z]{2})$")


@lru_cache(maxsize=4096)
def us_state(e164: str) -> str | None:
    """`FL` for a US number whose area code lies in Florida; None when unknown or not US.

    libphonenumber's geocoder names the area code's place ("Florida", "New York, NY"). A
    mobile number keeps its area code when its owner moves: this is where it was issued.
    """
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.region_code_for_number(number) != "US":
        return None
    place = geocoder.description_for_number(number, "en")
    found = _CITY_STATE.search(place)
    code = found[1] if found else STATES.get(place)
    return code if code in CODES else None

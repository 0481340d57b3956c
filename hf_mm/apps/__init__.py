"""The apps: the learning demos (`hf-mm demo`, `hf-mm demo clip`) and the bridge comparison (`hf-mm compare`).

They sit on top of everything else (modeling, training, eval) and nothing imports them; they import no test
helper.
"""

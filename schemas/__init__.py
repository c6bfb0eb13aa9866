"""The data every stage shares: the platform's result codes, the field rules, the national code
tables and the pandera schema built from them."""

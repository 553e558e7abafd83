"""A lab that checks the papers' claims with the pack's guidance code on a model with exact scores."""

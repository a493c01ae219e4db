"""vaejax: pure-functional autoencoders and VAEs in JAX."""

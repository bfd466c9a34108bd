"""The stages of the data flow, one package or module each: read -> decode -> detect -> align ->
embed -> write, then score and cluster over the written faces."""

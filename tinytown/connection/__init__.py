"""Connection set-up: which Redis a town uses (:mod:`.target`), the client options
(:mod:`.client`) and the town's own embedded server (:mod:`.embedded`)."""

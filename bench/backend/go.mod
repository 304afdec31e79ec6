module metaparticle/bench/backend

go 1.24

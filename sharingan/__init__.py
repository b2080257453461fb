"""Chapter 2: SharinGAN, a shared generator that maps synthetic and real images into one domain for a task
network (monocular depth in `sharingan.tasks.depth`, face normals in `sharingan.tasks.normals`)."""

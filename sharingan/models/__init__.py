"""SharinGAN networks, one family per file: generator (G, depth), critic (D on images), depth_network (T),
rbdn / sfsnet / face_critic (the face task)."""

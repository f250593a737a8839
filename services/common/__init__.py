"""What every TrainerAgent service shares: config, logging, the gRPC bootstrap, the bus and the artifact store."""

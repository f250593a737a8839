"""The gateway: TrainerAgent's one public door (GatewayService)."""

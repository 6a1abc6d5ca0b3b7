from django.apps import AppConfig


class SmppGatewayConfig(AppConfig):
    name = "smpp_gateway"
    verbose_name = "SMPP gateway"

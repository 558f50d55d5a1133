from services.kit.server import main
from services.telephony.app import create_app

main("telephony", create_app)

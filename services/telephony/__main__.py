from services.kit import main
from services.telephony.app import create_app

main("telephony", create_app)

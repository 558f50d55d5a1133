from services.kit import main
from services.ticker.app import create_app

main("ticker", create_app)

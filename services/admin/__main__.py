from services.admin.app import create_app
from services.kit import main

main("admin", create_app)

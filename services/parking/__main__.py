from services.parking.settings import ParkingSettings
from shared.run import serve

serve("parking", ParkingSettings())

"""The STS-07 crane as a 10 Hz physics model that fills the PLC process image.

Pure and deterministic for a seed: no clock, no I/O. ``Crane.step`` advances one PLC cycle
(100 ms) given the PLC setpoints (holding registers and coils) and the operator panel
(e-stop, storm pins, anti-collision), and returns the ``ProcessImage`` of
``crane-reference.md``: input registers 0–11 and discrete inputs 0–6.

The crane works container moves one after another: hoist to travel height, trolley over the
pick position, lower until the spreader lands, lock the twistlocks, lift, trolley to the
place position, lower, land, unlock, lift empty. Every few moves it gantries to another bay.
Each axis follows its target with a speed limit and an acceleration limit, and positions are
integrated from speeds, so the physical relations the process checks rely on hold exactly
(up to the rounding of the registers). At lift-off and landing the load cell ramps over
0.5–2 s while the hoist stands still: the ropes tension (or slacken) before the box moves.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass, field

__all__ = [
    "DT",
    "RATED_LOAD_T",
    "Crane",
    "Panel",
    "ProcessImage",
    "Setpoints",
    "bay_of_gantry",
    "from_u16",
    "ship_row",
    "ship_tier",
    "to_u16",
]

DT = 0.1  # s, one PLC cycle
RATED_LOAD_T = 65.0
G = 9.81

# Geometry (cm from the waterside rail / cm above the quay). The ship side is the outreach
# beyond TROLLEY_SHIP_FROM; the landside lanes where trucks wait are below TROLLEY_LANE_TO.
TRAVEL_HEIGHT = 1600
CHASSIS_HEIGHT = 150
TROLLEY_SHIP_FROM = 2600
ROW_PITCH = 250  # cm between ship rows
TROLLEY_LANES = (500, 850, 1200)
DECK_TIER_HEIGHT = {82: 300, 84: 560, 86: 820, 88: 1080}
HOLD_TIER_HEIGHT = {6: -700, 8: -440, 10: -180}
GANTRY_BAY0_DM = 3000  # gantry position of bay 01, dm along the quay
BAY_PITCH_DM = 65  # one 20-ft bay

# Axis limits: (max speed cm/s, acceleration cm/s²).
HOIST_EMPTY = (300.0, 80.0)
HOIST_LOADED = (150.0, 60.0)
TROLLEY = (400.0, 80.0)
GANTRY = (75.0, 20.0)

LOCK_DWELL_CYCLES = 15  # the driver takes ~1.5 s to lock or unlock once landed
# The ropes take up (or give back) the container's weight gradually as they tension and
# stretch: the load cell ramps over this many seconds at lift-off and landing.
TAKE_UP_S = (0.5, 2.0)
IDLE_CYCLES = (10, 40)


def to_u16(value: int) -> int:
    """A signed or unsigned integer as the 16-bit register that carries it (two's complement)."""
    return int(value) & 0xFFFF


def from_u16(register: int) -> int:
    """An int16 register read back as a signed value."""
    return register - 0x10000 if register & 0x8000 else register


def ship_row(trolley_cm: float) -> int:
    """The ship row under the trolley (rows counted from the waterside outwards)."""
    return max(0, round((trolley_cm - TROLLEY_SHIP_FROM) / ROW_PITCH))


def ship_tier(height_cm: float) -> int:
    """The tier whose container top is at ``height_cm`` (deck tiers 82+, hold tiers 02–18)."""
    tiers = {**DECK_TIER_HEIGHT, **HOLD_TIER_HEIGHT}
    return min(tiers, key=lambda tier: abs(tiers[tier] - height_cm))


def bay_of_gantry(gantry_dm: float) -> int:
    """The (odd, 20-ft) bay number at a gantry position."""
    return 1 + 2 * max(0, round((gantry_dm - GANTRY_BAY0_DM) / BAY_PITCH_DM))


@dataclass(frozen=True, slots=True)
class Setpoints:
    """What the PLC's writable tables hold: holding registers 0–3 and coils 0–1."""

    overload_limit: int = 715  # 0.1 t, 110 % of rated
    wind_stop_limit: int = 200  # 0.1 m/s
    hoist_speed_limit: int = 100  # %
    trolley_speed_limit: int = 100  # %
    safety_bypass: bool = False
    fault_reset: bool = False


@dataclass(frozen=True, slots=True)
class Panel:
    """The hard-wired safety inputs of the operator cabin and the quay."""

    estop: bool = False
    storm_pins: bool = False
    anti_collision: bool = False


@dataclass(frozen=True, slots=True)
class ProcessImage:
    """One PLC cycle's sensor registers and status bits, as Modbus carries them.

    ``ir`` holds the twelve input registers as 16-bit words (int16 values in two's
    complement); ``di`` the seven discrete inputs.
    """

    ir: tuple[int, ...]
    di: tuple[bool, ...]

    IR_NAMES = (
        "heartbeat", "hoist_load", "hoist_height", "hoist_speed", "hoist_torque",
        "trolley_position", "trolley_speed", "gantry_position", "gantry_speed",
        "wind_speed_1", "wind_speed_2", "sway_angle",
    )
    DI_NAMES = (
        "twistlocks_locked", "spreader_landed", "overload_trip", "wind_stop",
        "storm_pins_engaged", "estop_active", "anti_collision_stop",
    )
    SIGNED = frozenset({"hoist_height", "hoist_speed", "hoist_torque", "trolley_speed",
                        "gantry_speed", "sway_angle"})

    def value(self, name: str) -> int:
        """An input register by name, signed where the register map says int16."""
        register = self.ir[self.IR_NAMES.index(name)]
        return from_u16(register) if name in self.SIGNED else register

    def bit(self, name: str) -> bool:
        return self.di[self.DI_NAMES.index(name)]


class Phase(enum.Enum):
    IDLE = "idle"
    GANTRY = "gantry"
    TO_PICK = "to-pick"
    LOWER_PICK = "lower-pick"
    LOCK = "lock"
    LIFT = "lift"
    TO_PLACE = "to-place"
    LOWER_PLACE = "lower-place"
    UNLOCK = "unlock"
    LIFT_EMPTY = "lift-empty"


@dataclass(frozen=True, slots=True)
class Move:
    """One container move as the planner chose it."""

    discharge: bool  # ship → quay; otherwise load quay → ship
    weight_t: float
    take_up_s: float  # how long the ropes take to tension under this box (and to slacken)
    pick_trolley: float
    pick_height: float
    place_trolley: float
    place_height: float
    bay_gantry_cm: float


@dataclass(slots=True)
class Axis:
    """One drive: position (cm) and speed (cm/s), moved towards a target each cycle."""

    position: float
    speed: float = 0.0
    accel: float = 0.0

    def drive(self, target: float, max_speed: float, max_accel: float, stop: bool) -> None:
        if stop:
            # Emergency brakes: the drive stands still within one cycle.
            new_speed = 0.0
        else:
            error = target - self.position
            # Fastest speed from which the axis can still brake to the target when the
            # speed drops by max_accel·DT per cycle (the discrete form of sqrt(2·a·d)).
            step_speed = max_accel * DT
            cycles = (-1.0 + math.sqrt(1.0 + 8.0 * abs(error) / (step_speed * DT))) / 2.0
            reachable = cycles * step_speed
            wanted = math.copysign(min(max_speed, reachable), error)
            if abs(error) < 0.5:
                wanted = 0.0
            step = max_accel * DT
            new_speed = min(max(wanted, self.speed - step), self.speed + step)
            if abs(new_speed * DT) > abs(error) and new_speed * error > 0:
                new_speed = error / DT  # the last creep onto the target, never past it
            if abs(error) < 0.5 and abs(new_speed) <= step:
                new_speed = 0.0
        self.accel = (new_speed - self.speed) / DT
        self.speed = new_speed
        self.position += new_speed * DT


@dataclass(slots=True)
class Wind:
    """Gusting wind: a slowly wandering mean plus gusts that rise and decay."""

    mean: float  # m/s
    speed: float
    gust: float = 0.0

    def step(self, rng: random.Random) -> None:
        self.mean += rng.gauss(0.0, 0.02)
        self.mean = min(max(self.mean, 3.0), 11.0)
        if rng.random() < 0.01:  # a gust front roughly every 10 s
            self.gust += rng.uniform(1.5, 4.0)
        self.gust *= 0.97
        turbulence = rng.gauss(0.0, 0.25)
        self.speed = max(0.0, self.mean + self.gust + turbulence)


@dataclass
class Crane:
    """STS-07 doing container moves; call ``step`` once per 100 ms PLC cycle."""

    seed: int = 7
    heartbeat: int = 0
    rng: random.Random = field(init=False)
    hoist: Axis = field(init=False)
    trolley: Axis = field(init=False)
    gantry: Axis = field(init=False)
    wind: Wind = field(init=False)
    phase: Phase = field(init=False, default=Phase.TO_PICK)
    move: Move = field(init=False)
    moves_done: int = field(init=False, default=0)
    locked: bool = field(init=False, default=False)
    landed: bool = field(init=False, default=False)
    carrying: bool = field(init=False, default=False)  # container hanging on the ropes
    rope_share: float = field(init=False, default=0.0)  # share of the box's weight on the ropes
    dwell: int = field(init=False, default=0)
    overload_trip: bool = field(init=False, default=False)
    wind_stop: bool = field(init=False, default=False)
    sway: float = field(init=False, default=0.0)  # rad
    sway_rate: float = field(init=False, default=0.0)
    bay_index: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.bay_index = self.rng.randrange(4, 30)
        self.gantry = Axis(GANTRY_BAY0_DM * 10.0 + self.bay_index * BAY_PITCH_DM * 10.0)
        self.move = self._plan_move()
        # Start lowering onto the first pick so that even a short capture holds a lift.
        self.hoist = Axis(min(float(TRAVEL_HEIGHT), self.move.pick_height + 400.0))
        self.trolley = Axis(self.move.pick_trolley)
        self.phase = Phase.LOWER_PICK
        self.wind = Wind(mean=self.rng.uniform(5.0, 8.0), speed=6.0)
        self.heartbeat = self.heartbeat & 0xFFFF

    # -- planning -------------------------------------------------------------------------

    def _plan_move(self) -> Move:
        rng = self.rng
        discharge = rng.random() < 0.6
        # Container gross weights: mostly 8–30 t, a few heavy ones up to the rated 65 t.
        weight = rng.choice((rng.uniform(3.0, 12.0), rng.uniform(8.0, 30.0),
                             rng.uniform(8.0, 30.0), rng.uniform(25.0, 65.0)))
        row = rng.randrange(0, 10)
        ship_trolley = float(TROLLEY_SHIP_FROM + row * ROW_PITCH)
        tiers = {**DECK_TIER_HEIGHT, **HOLD_TIER_HEIGHT}
        tier = rng.choice((82, 82, 84, 84, 86, 88, 6, 8, 10))
        ship_height = float(tiers[tier])
        lane_trolley = float(rng.choice(TROLLEY_LANES))
        if discharge:
            pick, place = (ship_trolley, ship_height), (lane_trolley, float(CHASSIS_HEIGHT))
        else:
            pick, place = (lane_trolley, float(CHASSIS_HEIGHT)), (ship_trolley, ship_height)
        if self.moves_done and rng.random() < 0.25:
            self.bay_index += rng.choice((-1, 1))
            self.bay_index = min(max(self.bay_index, 0), 40)
        bay_cm = GANTRY_BAY0_DM * 10.0 + self.bay_index * BAY_PITCH_DM * 10.0
        take_up = round(rng.uniform(*TAKE_UP_S), 1)
        return Move(discharge, round(weight, 1), take_up, pick[0], pick[1], place[0], place[1], bay_cm)

    # -- one cycle ------------------------------------------------------------------------

    def step(self, setpoints: Setpoints = Setpoints(), panel: Panel = Panel()) -> ProcessImage:
        """Advance one 100 ms cycle and return the process image the PLC then serves."""
        self.heartbeat = (self.heartbeat + 1) & 0xFFFF
        self.wind.step(self.rng)
        wind_1 = self.wind.speed * (1.0 + self.rng.gauss(0.0, 0.02))
        wind_2 = self.wind.speed * 0.97 * (1.0 + self.rng.gauss(0.0, 0.02))
        wind_regs = (round(wind_1 * 10), round(wind_2 * 10))

        halted = panel.estop or panel.storm_pins or panel.anti_collision
        tripped = self.overload_trip or self.wind_stop
        self._drive(setpoints, stop=halted or tripped)
        if not (halted or tripped):
            self._advance_phase()

        suspended_t = self.move.weight_t * self.rope_share
        load_reading = round(suspended_t * 10)
        if load_reading:
            load_reading = max(1, load_reading + self.rng.randint(-2, 2))
        # Trips act on the drives from the next cycle on, as in a scanned PLC program.
        self._update_trips(setpoints, load_reading, wind_regs)

        accel_factor = 1.0 + (self.hoist.accel / 100.0) / G
        torque = suspended_t / RATED_LOAD_T * 1000.0 * accel_factor
        if load_reading:
            torque += self.rng.gauss(0.0, 2.0)
        self._swing()

        ir = (
            self.heartbeat,
            load_reading,
            to_u16(round(self.hoist.position)),
            to_u16(round(self.hoist.speed)),
            to_u16(round(torque)),
            round(self.trolley.position),
            to_u16(round(self.trolley.speed)),
            round(self.gantry.position / 10.0),
            to_u16(round(self.gantry.speed)),
            wind_regs[0],
            wind_regs[1],
            to_u16(round(math.degrees(self.sway) * 100)),
        )
        di = (self.locked, self.landed, self.overload_trip, self.wind_stop,
              panel.storm_pins, panel.estop, panel.anti_collision)
        return ProcessImage(ir, di)

    def _update_trips(self, sp: Setpoints, load: int, wind: tuple[int, int]) -> None:
        if sp.safety_bypass:
            # The bypass coil disables the interlocks: exactly why writing it is dangerous.
            self.overload_trip = self.wind_stop = False
            return
        over = load > sp.overload_limit
        windy = max(wind) > sp.wind_stop_limit
        # Trips latch; a fault_reset pulse clears them once the cause is gone.
        self.overload_trip = over or (self.overload_trip and not sp.fault_reset)
        self.wind_stop = windy or (self.wind_stop and not sp.fault_reset)

    def _hoist_limits(self, sp: Setpoints) -> tuple[float, float]:
        speed, accel = HOIST_LOADED if self.carrying else HOIST_EMPTY
        return speed * sp.hoist_speed_limit / 100.0, accel

    def _targets(self) -> tuple[float, float, float]:
        """(hoist, trolley, gantry) targets of the current phase."""
        m = self.move
        hoist, trolley, gantry = self.hoist.position, self.trolley.position, self.gantry.position
        if self.phase in (Phase.LOCK, Phase.UNLOCK):
            return hoist, trolley, gantry  # landed: only the twistlocks move
        if self.phase in (Phase.IDLE, Phase.GANTRY):
            # the hoist finishes rising to travel height while the driver waits or gantries
            gantry_target = m.bay_gantry_cm if self.phase is Phase.GANTRY else gantry
            return TRAVEL_HEIGHT, trolley, gantry_target
        if self.phase is Phase.TO_PICK:
            # Hoist up first; the trolley only travels once the spreader clears the stacks.
            at_height = self.hoist.position >= TRAVEL_HEIGHT - 100
            return TRAVEL_HEIGHT, m.pick_trolley if at_height else trolley, gantry
        if self.phase is Phase.LOWER_PICK:
            return m.pick_height, trolley, gantry
        if self.phase is Phase.LIFT and self.rope_share < 1.0:
            return hoist, trolley, gantry  # the ropes tension before the box lifts off
        if self.phase in (Phase.LIFT, Phase.LIFT_EMPTY):
            return TRAVEL_HEIGHT, trolley, gantry
        if self.phase is Phase.TO_PLACE:
            return TRAVEL_HEIGHT, m.place_trolley, gantry
        return m.place_height, trolley, gantry  # LOWER_PLACE

    def _drive(self, sp: Setpoints, stop: bool) -> None:
        hoist_target, trolley_target, gantry_target = self._targets()
        hoist_speed, hoist_accel = self._hoist_limits(sp)
        self.hoist.drive(hoist_target, hoist_speed, hoist_accel, stop)
        trolley_speed = TROLLEY[0] * sp.trolley_speed_limit / 100.0
        self.trolley.drive(trolley_target, trolley_speed, TROLLEY[1], stop)
        self.gantry.drive(gantry_target, GANTRY[0], GANTRY[1], stop)
        # The spreader lands on the container or chassis below; it lifts off once the
        # hoist has raised it a little.
        if self.phase in (Phase.LOWER_PICK, Phase.LOWER_PLACE):
            ground = self.move.pick_height if self.phase is Phase.LOWER_PICK else self.move.place_height
            if self.hoist.position <= ground + 0.5 and abs(self.hoist.speed) < 1.0:
                self.landed = True
        elif self.landed and self.hoist.position > self._ground() + 2.0:
            self.landed = False
            if self.locked:
                self.carrying = True

    def _ground(self) -> float:
        m = self.move
        return m.pick_height if self.phase in (Phase.LOCK, Phase.LIFT) else m.place_height

    def _arrived(self, axis: Axis, target: float) -> bool:
        return abs(axis.position - target) < 0.5 and axis.speed == 0.0

    def _advance_phase(self) -> None:
        m = self.move
        phase = self.phase
        if phase is Phase.IDLE:
            self.dwell -= 1
            if self.dwell <= 0:
                needs_gantry = abs(self.gantry.position - m.bay_gantry_cm) > 1.0
                self.phase = Phase.GANTRY if needs_gantry else Phase.TO_PICK
        elif phase is Phase.GANTRY:
            if self._arrived(self.gantry, m.bay_gantry_cm) and self._arrived(self.hoist, TRAVEL_HEIGHT):
                self.phase = Phase.TO_PICK
        elif phase is Phase.TO_PICK:
            if self._arrived(self.trolley, m.pick_trolley) and self.hoist.position >= TRAVEL_HEIGHT - 100:
                self.phase = Phase.LOWER_PICK
        elif phase is Phase.LOWER_PICK:
            if self.landed:
                self.phase, self.dwell = Phase.LOCK, LOCK_DWELL_CYCLES
        elif phase is Phase.LOCK:
            self.dwell -= 1
            if self.dwell <= 0 and self.landed:
                self.locked = True  # twistlocks only turn on a landed spreader
                self.phase = Phase.LIFT
        elif phase is Phase.LIFT:
            if self.rope_share < 1.0:
                # (rounded so that whole cycles reach exactly 0 or 1, not 1 - 1e-16)
                self.rope_share = min(1.0, round(self.rope_share + DT / m.take_up_s, 9))
                self.carrying = self.rope_share >= 1.0  # the box hangs once the ropes hold it all
            elif self._arrived(self.hoist, TRAVEL_HEIGHT):
                self.phase = Phase.TO_PLACE
        elif phase is Phase.TO_PLACE:
            if self._arrived(self.trolley, m.place_trolley):
                self.phase = Phase.LOWER_PLACE
        elif phase is Phase.LOWER_PLACE:
            if self.landed:
                # The box now stands on the chassis or ship; the ropes slacken gradually.
                self.carrying = False
                self.rope_share = max(0.0, round(self.rope_share - DT / m.take_up_s, 9))
                if self.rope_share <= 0.0:
                    self.phase, self.dwell = Phase.UNLOCK, LOCK_DWELL_CYCLES
        elif phase is Phase.UNLOCK:
            self.dwell -= 1
            if self.dwell <= 0 and self.landed:
                self.locked = False
                self.phase = Phase.LIFT_EMPTY
        elif phase is Phase.LIFT_EMPTY and self.hoist.position >= TRAVEL_HEIGHT - 100:
            self.moves_done += 1
            self.move = self._plan_move()
            self.phase, self.dwell = Phase.IDLE, self.rng.randint(*IDLE_CYCLES)

    def _swing(self) -> None:
        """The load swings like a damped pendulum driven by trolley acceleration."""
        rope_m = max(5.0, (4800.0 - self.hoist.position) / 100.0)
        trolley_accel = self.trolley.accel / 100.0
        # The anti-sway control cancels most of the kick of trolley acceleration.
        angular_accel = -(G / rope_m) * math.sin(self.sway) - 0.3 * trolley_accel / rope_m
        self.sway_rate += angular_accel * DT
        self.sway_rate *= 0.97  # anti-sway control damps the swing
        self.sway += self.sway_rate * DT
        self.sway = max(-0.05, min(0.05, self.sway))
